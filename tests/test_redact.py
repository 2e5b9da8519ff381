import pytest

from medix_ray.redact import MASK, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:key@host.example/v1", "https://***@host.example/v1"),
        ("https://key@host.example:8443/v1", "https://***@host.example:8443/v1"),
        ("https://host/v1?key=abc&model=m", "https://host/v1?key=***&model=m"),
        (
            "https://host/v1?api_key=a&access_token=b&X-Amz-Signature=c",
            "https://host/v1?api_key=***&access_token=***&X-Amz-Signature=***",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://host/v1#token=abc", "https://host/v1#***"),
        ("smollm2-135m-instruct", "smollm2-135m-instruct"),
        ("/models/judge", "/models/judge"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_url_keeps_no_part_of_an_unparseable_url():
    assert redact_url("http://[::1:secret/v1") == MASK


def test_redact_text_finds_every_url():
    text = "judge http://a:s1@h1/v1 failed; fallback https://h2/v1?token=s2 too (see http://h3/)"
    out = redact_text(text)
    assert "s1" not in out and "s2" not in out and "http://h3/" in out and out.startswith("judge http://***@h1/v1")


def test_the_config_written_beside_a_run_has_no_url_credentials():
    from medix_ray.config import load_config, to_yaml

    cfg = load_config(
        None, ["reward.judge.base_url=https://u:sk-1@judge.example/v1?key=sk-2", "eval.judge=http://a:sk-3@c/v1"]
    )
    text = to_yaml(cfg)
    assert "base_url: https://***@judge.example/v1?key=***" in text and "judge: http://***@c/v1" in text
    assert "sk-" not in text
    assert cfg.reward.judge.base_url.startswith("https://u:sk-1@")  # the live config keeps what it was given
