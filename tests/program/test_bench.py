"""bench/eval_scale.py: its synthetic stack is a valid outpost stack, one size measures, and the
verdict says MET only when the 200-host row is both fast enough and linear."""

import importlib.util

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("eval_scale", ROOT / "bench" / "eval_scale.py")
eval_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_scale)


def _row(hosts, resources, wall, cpu, growth):
    return {"hosts": hosts, "services": hosts * 10, "resources": resources, "wall_s": wall,
            "cpu_s": cpu, "render_cpu_s": 0.0, "peak_mib": 1.0,
            "ms_per_resource": 1000 * cpu / resources, "growth": growth}


def test_one_size_measures_the_whole_program():
    row = eval_scale.measure_one(2)
    # per host: its server or bootstrap, key, firewall, base, tls, proxy and ten services
    assert row["hosts"] == 2 and row["services"] == 20 and row["resources"] > 2 * 13
    assert 0 < row["render_cpu_s"] < row["cpu_s"] and row["peak_mib"] > 0


def test_verdict_needs_both_speed_and_linear_growth():
    ten = _row(10, 250, 1.0, 1.0, 1.0)
    assert eval_scale.verdict([ten, _row(200, 5000, 9.5, 9.4, 0.9)]).startswith("target MET")
    assert eval_scale.verdict([ten, _row(200, 5000, 10.5, 9.4, 0.9)]).startswith("target NOT MET")
    assert eval_scale.verdict([ten, _row(50, 1250, 2.0, 2.0, 1.6), _row(200, 5000, 9.5, 9.4, 0.9)]) \
        .startswith("target NOT MET")
    assert "not measured" in eval_scale.verdict([ten])


def test_the_table_has_a_row_per_size():
    lines = eval_scale.table([_row(10, 250, 1.0, 1.0, 1.0), _row(200, 5000, 9.5, 9.4, 0.9)])
    assert "ms/res" in lines[1] and "growth" in lines[1] and "peak MiB" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["10", "200"]
