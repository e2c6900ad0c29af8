"""The command-line layer every entry point shares (topo/cli.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from topo import cli
from topo.config import ConfigError, from_dict

ROOT = Path(__file__).resolve().parent.parent


def py(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.mark.parametrize("argv", [
    ["-m", "node_app.job", "--grid", "5x5", "-mi", "1", "-ma", "5", "-c", "3", "--dry-run", "--json"],
    ["-m", "experiments.paper", "--help"],
    ["-m", "topo.ground_windows", "--station", "Berlin", "--hours", "1", "--json"],
])
def test_a_closed_pipe_ends_quietly(argv):
    """``... --json | head -c0``: the reader is gone before the program writes."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0


def test_unknown_keys_name_themselves_and_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"time_factr: unknown key \(did you mean 'time_factor'\?\)"):
        from_dict({"time_factr": 60})
    with pytest.raises(ConfigError, match=r"link\.tx_powr_w: unknown key \(did you mean 'tx_power_w'"):
        from_dict({"link": {"tx_powr_w": 5}})
    with pytest.raises(cli.UsageError, match="zzz: unknown key") as e:
        cli.check_keys({"zzz": 1}, {"grid", "seeds"})
    assert "did you mean" not in str(e.value)


def test_experiment_config_keys_use_the_same_rule(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("seedz: 3\n")
    res = py("-m", "experiments.matrix", "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() .splitlines()[-1].startswith(
        "error: seedz: unknown key (did you mean 'seeds'?)")


@pytest.mark.parametrize("text, message", [
    (b"\xff\xfe\x00binary", "not valid YAML"),
    (b"- a\n- list\n", "top level must be a mapping"),
])
def test_unreadable_configs_are_one_line(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text)
    for argv in (["-m", "topo.run", str(bad), "--check"], ["-m", "experiments.paper", "--config", str(bad)]):
        res = py(*argv)
        assert res.returncode == 2, (argv, res.stderr)
        assert "Traceback" not in res.stderr and message in res.stderr, res.stderr
        assert res.stderr.strip().startswith("error:")


def test_results_root_that_cannot_exist_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(cli.UsageError, match="--results"):
        cli.results_dir(blocker / "below", "job")
    made = cli.results_dir(tmp_path, "job")
    assert made.parent == tmp_path / "job" and made.name.endswith("Z") and made.is_dir()
    again = cli.results_dir(tmp_path, "job")
    assert again != made and again.is_dir()


def test_run_maps_exceptions_to_exit_codes(capsys):
    def raises(exc):
        def main(argv):
            raise exc
        return main
    assert cli.run(raises(cli.UsageError("bad flag"))) == 2
    assert cli.run(raises(cli.RunFailed("job failed"))) == 1
    assert cli.run(raises(KeyError("oops"))) == 1
    assert cli.run(lambda argv: None) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: bad flag", "error: job failed",
                   "error: internal error: KeyError: 'oops' (SPACECOMP_DEBUG=1 shows the traceback)"]


def test_job_results_go_under_results_job_timestamp(tmp_path):
    res = py("-m", "node_app.job", "--loopback", "--grid", "3x3", "-mi", "1", "-ma", "3", "-c", "2",
             "-s", "1", "--json", "--results", str(tmp_path), timeout=180)
    assert res.returncode == 0, res.stderr[-1000:]
    out = json.loads(res.stdout.strip())
    (run_dir,) = (tmp_path / "job").iterdir()
    assert Path(out["results_dir"]) == run_dir
    assert json.loads((run_dir / "metrics.json").read_text())["jobid"] == out["jobid"]


@pytest.mark.parametrize("argv", [["--pairs", "0"], ["--pairs", "20001"], ["--rounds", "0"]])
def test_bench_veth_refuses_out_of_range_sizes_before_touching_the_network(argv, capsys):
    from experiments import bench_veth
    assert bench_veth.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --pairs")
