"""Everything about the process environment medix-ray runs in.

- `ray_init.init_ray`: starting or joining Ray, one policy for every entry point;
- `node`: what counts as a small CPU node, the size of a local cluster, its dashboard, the workers' env;
- `switches`: every environment variable medix-ray reads (`MEDIX_*`), with a typed reader each.

Stdlib only at import: `medix_ray/setup_env.py` runs before the install is complete.
"""
