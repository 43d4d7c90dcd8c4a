"""bench/engine_scale.py: the table, the ratios and the verdicts from made-up rows (fast), how a
run's end is classified (killed, a config the kernel refuses, a failure), and one real preview of
the 1-host stack and its floor (the real CLI from `make setup`, about 15 s)."""

import json

from bench import engine_scale as E
from bench.proctree import Proc, TreeRun
from bench.synthetic import synthetic_config


def row(program, hosts, resources, wall, cli, status="ok", cpu=None, tree=None):
    return E.Preview(program, hosts, resources, status=status, wall_s=wall, cpu_s=cpu or wall * 0.8,
                     cli_mib=cli, lang_mib=40.0, prog_mib=100.0, tree_mib=tree or cli + 300,
                     providers={"command": 45.0, "hcloud": 90.0, "tls": 88.0} if program == "outpost"
                     else {"command": 45.0})


def pair(hosts, resources, wall, cli, floor_wall, floor_cli):
    return [row("outpost", hosts, resources, wall, cli), row("floor", hosts, resources, floor_wall, floor_cli)]


DISPLAY = """Previewing update (scale-long-10):
 +  pulumi:pulumi:Stack outpost-scale-long-10 create
Outputs:
    hosts: {}

Resources:
    + 257 to create
    1 unchanged

"""


def test_the_resource_count_is_the_summary_block_of_the_display():
    assert E.resources_in(DISPLAY) == 258
    assert E.resources_in("error: no summary here\n") is None


def test_the_200_host_long_form_is_over_the_kernel_limit_and_the_50_host_one_is_not():
    assert E.config_bytes(synthetic_config(200)) > E.ARG_MAX_STRING > E.config_bytes(synthetic_config(50))


def tree(stdout="", stderr="", returncode=0, killed=""):
    procs = [Proc(1, "pulumi", 1800.0, 9.0), Proc(2, "pulumi-language-python", 39.0, 0.1),
             Proc(3, "pulumi-language-python", 38.0, 0.1), Proc(4, "python pulumi-language-python-exec", 118.0, 4.7),
             Proc(5, "pulumi-resource-command", 47.0, 0.3), Proc(6, "pulumi-resource-tls", 90.0, 0.5)]
    return TreeRun(None if killed else returncode, 23.7, 17.2, 2191.7, procs, stdout, stderr, killed)


def test_a_finished_preview_names_each_process_peak():
    r = E.from_tree("outpost", 10, tree(DISPLAY))
    assert r.ok and r.resources == 258 and r.cli_mib == 1800.0 and r.lang_mib == 39.0 and r.prog_mib == 118.0
    assert r.providers == {"command": 47.0, "tls": 90.0}
    assert r.ms_per_resource == round(1000 * 23.7 / 258, 1)


def test_how_a_preview_that_did_not_finish_is_classified():
    e2big = "error: fork/exec /work/.venv/bin/python: argument list too long\n"
    assert E.from_tree("outpost", 200, tree(stderr=e2big, returncode=255)).status == "config too large"
    killed = E.from_tree("floor", 200, tree(killed="time"))
    assert killed.status == "killed: time" and "stopped after 24 s" in killed.detail and not killed.ok
    assert E.from_tree("floor", 200, tree(killed="memory")).status == "killed: memory"
    failed = E.from_tree("outpost", 10, tree(stdout="error: boom\n", returncode=1))
    assert failed.status == "failed" and "exit 1" in failed.detail and "boom" in failed.detail
    assert failed.ms_per_resource is None


def test_the_table_pairs_each_size_with_its_floor_and_their_ratio():
    rows = pair(10, 258, 23.7, 1800.0, 9.0, 600.0)
    rows += [E.Preview("outpost", 200, 5008, status="config too large", detail="config 367 KiB as JSON"),
             row("floor", 200, 5008, 40.0, 900.0)]
    settings = {"form": "long", "skip_checkpoints": False, "load": "1.00 1.00 1.00", "floor": "Commands"}
    lines = E.table(rows, settings)
    assert "PULUMI_SKIP_CHECKPOINTS off" in lines[0]
    ten = [line for line in lines[2:] if line.split()[0] == "10"]
    assert [line.split()[1] for line in ten] == ["outpost", "floor"]
    assert ten[0].split()[2:4] == ["258", "23.70"] and "hcloud 90" in ten[0]
    ratios = lines[lines.index(ten[1]) + 1].split()
    assert ratios[:4] == ["÷", "floor", f"{23.7 / 9.0:.2f}", f"{(23.7 * 0.8) / (9.0 * 0.8):.2f}"]
    assert ratios[4] == "3.00"                                  # CLI memory
    big = next(line for line in lines if line.split()[:2] == ["200", "outpost"])
    assert big.split()[2] == "5008" and "CONFIG TOO LARGE: config 367 KiB as JSON" in big
    assert not any(line.split()[:2] == ["÷", "floor"] for line in lines[lines.index(big):])


def test_verdicts_met():
    rows = pair(50, 1258, 10.0, 500.0, 8.0, 400.0) + pair(200, 5008, 40.0, 1800.0, 30.0, 1500.0)
    assert E.growth(rows) == {"resources": round(5008 / 1258, 2),
                              "wall": round(4.0 / (5008 / 1258), 2), "cli_memory": round(3.6 / (5008 / 1258), 2)}
    lines = E.verdicts(rows)
    assert [line.split(":")[0] for line in lines] == ["time", "memory", "against the floor", "growth 50 → 200 hosts"]
    assert all(": MET:" in line for line in lines), lines
    assert "40.0 s" in lines[0] and "1.76 GiB" in lines[1]


def test_verdicts_not_met_name_the_failing_measure():
    slow = pair(50, 1258, 10.0, 500.0, 8.0, 400.0) + pair(200, 5008, 61.0, 2100.0, 30.0, 1500.0)
    lines = E.verdicts(slow)
    assert lines[0].startswith("time: NOT MET") and lines[1].startswith("memory: NOT MET")
    assert lines[2].startswith("against the floor: NOT MET: at most 2.03× the floor")
    assert lines[3].startswith("growth 50 → 200 hosts: NOT MET")


def test_verdicts_when_the_target_size_did_not_run_or_start():
    assert E.verdicts(pair(10, 258, 5.0, 300.0, 4.0, 250.0))[0] == \
        "time and memory: not measured (200 hosts not among the sizes)"
    refused = pair(50, 1258, 10.0, 500.0, 8.0, 400.0)
    refused += [E.Preview("outpost", 200, 5008, status="config too large", detail="config 367 KiB as JSON"),
                row("floor", 200, 5008, 30.0, 1500.0)]
    lines = E.verdicts(refused)
    assert lines[0] == ("time and memory: NOT MET: 200 hosts × 10 services did not finish: config too large: "
                        "config 367 KiB as JSON")
    assert lines[1].startswith("against the floor: NOT MET: 200 hosts did not finish; elsewhere 50 hosts ×1.25")
    assert lines[2] == "growth 50 → 200 hosts: not measured (both sizes must finish)"


def test_one_real_size(capsys):
    """The whole benchmark at 1 host, as `make bench` runs it: the real preview of the synthetic
    stack and of the floor at the same resource count."""
    assert E.main(["--sizes", "1", "--json", "--timeout", "120"]) == 0
    doc = json.loads(capsys.readouterr().out)
    outpost, floor = doc["rows"]
    assert outpost["status"] == floor["status"] == "ok", doc["rows"]
    assert outpost["resources"] == floor["resources"] > 15          # one host: 22 resources
    assert set(outpost["providers"]) >= {"command", "hcloud", "tls"} and set(floor["providers"]) == {"command"}
    for r in (outpost, floor):
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and 50 < r["cli_mib"] < 2048 and r["prog_mib"] > 20
    assert doc["verdicts"][0].startswith("time and memory: not measured")


def test_the_no_change_up_table_says_the_ratio_and_the_sessions():
    from bench import no_change_up as N
    doc = {"hosts": 10, "services": 10, "resources": 31, "ratio": 1.31,
           "rows": [{"phase": "first up", "wall_s": 190.0, "cpu_s": 40.0, "cli_mib": 180, "tree_mib": 600, "sessions": None},
                    {"phase": "preview", "wall_s": 8.0, "cpu_s": 6.0, "cli_mib": 150, "tree_mib": 400, "sessions": None},
                    {"phase": "no-change up", "wall_s": 10.5, "cpu_s": 7.0, "cli_mib": 160, "tree_mib": 420,
                     "sessions": 0}],
           "verdict": "target MET: ..."}
    lines = N.table(doc)
    assert lines[0].startswith("no-change pulumi up on the VM: 10 static hosts × 10 process services, 31 resources")
    assert lines[-3].split() == ["no-change", "up", "10.50", "7.00", "160", "420", "0"]
    assert lines[-2] == "no-change up ÷ preview: 1.31"


def test_the_vm_fleet_is_one_group_of_hosts_that_are_all_the_vm(tmp_path):
    from types import SimpleNamespace

    from bench import no_change_up as N
    from components.load import parse
    vm = SimpleNamespace(ssh_port=2299, host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o vm",
                         public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o deploy")
    stack = parse(N.fleet_on(vm, 10, 10), "nochange")
    assert len(stack.hosts) == 10 and {h.port for h in stack.hosts.values()} == {2299}
    assert all(not s.container for s in stack.services.values()) and len(stack.services) == 10
