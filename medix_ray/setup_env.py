"""Post-install fix-ups for CPU machines, run by `make install`: the torchvision guard and the import check
of medix_ray/environment/torchvision_guard.py (docs/install.md).

    python medix_ray/setup_env.py [--check-only]

A script, not a module: it runs before the install is complete, with the standard library only.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python puts medix_ray/ first on the path; the repository root imports the package.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from medix_ray.environment.torchvision_guard import main

    main()
