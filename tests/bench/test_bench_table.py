"""The table `make bench` ends with: both tools' phases side by side with ratios, then the
program-evaluation rows exactly as bench/eval_scale.py --json hands them over (the real script, run
at two small sizes, so a change of its output breaks this test and not a one-hour bench run)."""

from bench.ansible_vs_outpost import Phase, eval_scale_rows, ratio, table


def phases(fresh, no_change, tag, lost):
    return [Phase("fresh", fresh, 6, 6, "6 commands"), Phase("no change", no_change, 0, 0, "0 commands"),
            Phase("tag", tag, 1, 1, "1 commands", sent=400, lost=lost)]


def test_ratios_say_equal_for_nothing_against_nothing_and_never_divide_by_zero():
    assert ratio(0, 0) == "=" and ratio(3, 0) == "n/a" and ratio(0, 97) == "0.00"
    assert ratio(39.0, 357.5) == "0.11" and ratio(None, 1) == ""


def test_the_table_shows_both_tools_and_the_evaluation_rows():
    evals = eval_scale_rows("1,2")
    assert [r["hosts"] for r in evals["rows"]] == [1, 2] and "not measured" in evals["verdict"]
    ansible = [Phase("fresh", 357.5, 1, 144, "39 tasks, 28 changed"),
               Phase("no change", 112.8, 1, 97, "25 tasks, 0 changed"),
               Phase("tag", 160.2, 1, 115, "36 tasks, 7 changed", sent=2895, lost=0)]
    lines = table(phases(39.0, 0.0, 25.5, 0), ansible, "tcg", evals).splitlines()
    no_change = next(i for i, line in enumerate(lines) if line.startswith("re-apply, no change"))
    assert lines[no_change].split()[-3:] == ["0.0", "112.8", "0.00"]          # wall seconds
    assert lines[no_change + 2].split()[-3:] == ["0", "97", "0.00"]           # SSH sessions
    lost = next(line for line in lines if "requests lost" in line)
    assert lost.split()[-3:] == ["0", "0", "="]
    start = lines.index(evals_title(lines))
    assert [line.split()[0] for line in lines[start + 2:-1]] == ["1", "2"]
    assert lines[-1] == evals["verdict"]


def evals_title(lines):
    return next(line for line in lines if line.startswith("program evaluation"))


def test_a_tool_left_out_shows_dashes():
    lines = table(phases(39.0, 0.0, 25.5, 0), [], "tcg", None).splitlines()
    fresh = next(line for line in lines if line.startswith("fresh deploy"))
    assert fresh.split()[-2:] == ["39.0", "-"]
    assert not any(line.startswith("program evaluation") for line in lines)
