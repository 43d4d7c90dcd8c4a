"""Names and paths a host already has, which no stack may take over: the unit and user names a
service may not have, the system accounts a service may not run as, and the places a service's
files may never go. Pure data, at the bottom of the config layer: the config checks
(`checks.py`, `takeover.py`) and the service renderer all read it from here.
"""

# Units and users a host already has: a service named like one of them would replace it.
RESERVED = {"ssh", "sshd", "caddy", "haproxy", "nginx", "podman", "root", "admin", "dbus", "cron",
            "outpost", "systemd", "wg-quick", "network", "networking", "getty", "user", "default"}

# Units of the host that a service's unit of the same name would shadow in /etc/systemd/system.
RESERVED_NAMES = frozenset({
    "ssh", "sshd", "caddy", "haproxy", "nginx", "podman", "podman-auto-update", "dbus", "cron",
    "getty", "networking", "user", "default", "multi-user", "sockets", "timers", "basic", "sysinit",
    "network", "network-online", "unattended-upgrades", "apt-daily", "wg-quick", "restic", "init",
})
RESERVED_PREFIXES = ("systemd-", "outpost-", "user-", "podman-")

# Accounts every outpost host has, refused before anything runs: Debian's base-passwd users and
# groups (`useradd --user-group` needs the group name free too), the accounts systemd and OpenSSH
# create, the users of the three proxies (a stack may switch proxy kind on its hosts) and outpost's
# admin. A service may not run as one of them, and the admin may not be one either.
# Any other name (postgres, mysql, redis, ...) is a real account on some hosts and not on others:
# the agent refuses at apply time to take over an account it did not create, naming the service's
# `user:` key (files/agent: ensure_users), so a host without it is no reason to refuse.
SYSTEM_ACCOUNTS = frozenset({
    # base-passwd: users
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt",
    # base-passwd: groups
    "adm", "tty", "disk", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo",
    "audio", "dip", "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff",
    "users", "nogroup",
    # systemd (sysusers), udev, dbus, OpenSSH, cron
    "systemd-network", "systemd-resolve", "systemd-timesync", "systemd-journal",
    "systemd-journal-remote", "systemd-coredump", "systemd-oom", "messagebus", "input", "kvm",
    "render", "sgx", "netdev", "sshd", "_ssh", "ssh", "crontab",
    # the proxies, and outpost's own admin
    "caddy", "haproxy", "nginx", "admin",
})

# Where a file from `secret_files` or `artifacts` may never go: root's own controls (sudo, sshd,
# PAM, the account databases, cron), every directory systemd or podman read units from, and the
# agent's own program and state. A path equal to one of these or below it is refused.
FORBIDDEN_TARGETS = (
    "/etc/sudoers.d", "/etc/sudoers",
    "/etc/ssh", "/root",
    "/etc/pam.d", "/etc/security", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow",
    "/etc/subuid", "/etc/subgid", "/etc/cron.d", "/etc/cron.daily", "/etc/cron.hourly",
    "/etc/cron.weekly", "/etc/cron.monthly", "/etc/crontab", "/var/spool/cron",
    "/etc/ld.so.preload", "/etc/ld.so.conf.d", "/etc/profile.d", "/etc/environment",
    "/etc/apt", "/etc/modprobe.d", "/etc/polkit-1",
    # unit directories (system, user, generators, quadlets)
    "/etc/systemd", "/run/systemd", "/lib/systemd", "/usr/lib/systemd", "/usr/local/lib/systemd",
    "/etc/containers", "/usr/share/containers", "/usr/lib/containers",
    # the agent and its state
    "/usr/local/lib/outpost", "/var/lib/outpost", "/etc/outpost",
)
# Below any home directory: the user's own unit directories (the admin's home is refused whole).
FORBIDDEN_IN_HOME = (".config/systemd", ".config/containers", ".local/share/systemd")
