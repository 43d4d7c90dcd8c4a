"""Golden tests for the proxy renderer (components/render/proxy.py).

Each case in proxy_cases.CASES renders to tests/render/golden/proxy/<case>/: every file at its
host path, the blue-green switch templates under switch/, and FILES (mode owner group path).
`OUTPOST_UPDATE_GOLDEN=1 pytest tests/render/test_proxy.py` rewrites them; review the diff.
The key lines are asserted inline as well, so a golden update cannot silently drop them.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from components.render import proxy
from components.render.proxy import ProxySpec, Route, Upstream, render_proxy

from tests.render.proxy_cases import CASES, EUGENE, KOLLEKTIVKART, PEERBOOK, ROUTES, bluegreen_upstreams
from tests.render.proxy_cases import SIMPLE as SIMPLE_ROUTES
from tests.render.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "proxy"


def golden_tree(spec: ProxySpec) -> dict[str, str]:
    """Relative path → content of everything the golden directory of one case holds. The reload
    tool is a program shipped as it is, not a template: its golden is where it comes from."""
    files = render_proxy(spec)
    tree = {f.path.lstrip("/"): f.content for f in files}
    tool = proxy.RELOAD_TOOL.lstrip("/")
    if tool in tree:
        assert tree[tool] == proxy.RELOAD_TOOL_SOURCE.read_text()
        tree[tool] = "the bytes of files/proxy/outpost-proxy-reload.py\n"
    tree["FILES"] = "".join(f"{f.mode} {f.owner} {f.group} {f.path}\n" for f in files)
    for up in bluegreen_upstreams(spec):
        path, template = proxy.bluegreen_switch_template(spec.kind, up)
        tree["switch" + path] = template
    return tree


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    check_golden(golden_tree(CASES[case]), GOLDEN / case, case)


def main_config(case: str) -> str:
    spec = CASES[case]
    return {f.path: f.content for f in render_proxy(spec)}[proxy.MAIN_CONFIG[spec.kind]]


def files_of(case: str) -> dict[str, proxy.File]:
    return {f.path: f for f in render_proxy(CASES[case])}


# --- Caddy ------------------------------------------------------------------------------------

def test_caddy_load_balancing_retries_and_health():
    caddyfile = main_config("caddy-internal")
    assert "to 127.0.0.1:8000 127.0.0.1:8001 127.0.0.1:8002\n" in caddyfile
    assert "\tlb_retries" not in caddyfile      # it would end lb_try_duration's wait after 3 tries
    for line in ("lb_policy round_robin", "lb_try_duration 15s", "lb_try_interval 250ms",
                 "health_uri /ready", "health_interval 2s", "health_timeout 1s", "health_status 200",
                 "fail_duration 2s", "dial_timeout 3s", "encode zstd gzip",
                 "output file /var/log/caddy/access.log", "grace_period 30s"):
        assert f"\t{line}\n" in caddyfile, line
    # eugene has no health path: passive checks only
    eugene_block = caddyfile.split("to 127.0.0.1:8080\n")[1].split("transport http")[0]
    assert "health_uri" not in eugene_block and "fail_duration 2s" in eugene_block


def test_caddy_path_routes_keep_prefix_longest_first_then_catch_all():
    caddyfile = main_config("caddy-internal")
    api = caddyfile.split("api.example.org {\n")[1].split("\n}\n")[0]
    assert api.index("@route0 path /eugene/v2 /eugene/v2/*") < api.index("@route1 path /eugene /eugene/*")
    assert api.index("handle @route1 {") < api.index("\thandle {\n")
    assert "handle_path" not in caddyfile and "uri strip_prefix" not in caddyfile
    paths_only = caddyfile.split("paths-only.example.org {\n")[1]
    assert "\thandle {\n\t\trespond 404\n\t}\n" in paths_only


def test_caddy_tls_modes():
    acme = main_config("caddy-acme")
    assert "\temail ops@example.org\n" in acme and "\tacme_ca https://127.0.0.1:14000/dir\n" in acme
    assert "\ttls " not in acme and "auto_https" not in acme
    internal = main_config("caddy-internal")
    assert "\tauto_https disable_certs\n" in internal and "email" not in internal
    assert "\ttls {\n\t\tload /etc/outpost/tls\n\t}\n" in internal
    none = main_config("caddy-none")
    assert "\tauto_https off\n" in none and "\nhttp://api.example.org {\n" in none
    assert "\ttls " not in none


def test_caddy_trusts_a_private_acme_ca_root_shipped_as_a_secret_file():
    caddyfile = main_config("caddy-acme-private-ca")
    assert "\tacme_ca https://127.0.0.1:14000/dir\n\t# " in caddyfile
    assert "\tacme_ca_root /etc/outpost/tls/acme-ca-root.pem\n" in caddyfile
    root = files_of("caddy-acme-private-ca")[proxy.ACME_CA_ROOT]
    assert root.content == "<secret:pebble_root>" and (root.mode, root.group) == ("0640", "caddy")
    assert [d.path for d in proxy.proxy_dirs(CASES["caddy-acme-private-ca"])] == [proxy.LIVE_DIR, proxy.TLS_DIR]
    assert "acme_ca_root" not in main_config("caddy-acme")
    assert proxy.ACME_CA_ROOT not in files_of("caddy-acme")


@pytest.mark.parametrize("kind,tls,name", [("caddy", "internal", "root"), ("caddy", "acme", "bad name"),
                                           ("caddy", "acme", "x}"), ("nginx", "none", "root")])
def test_acme_ca_root_is_caddy_acme_only_and_a_secret_name(kind, tls, name):
    with pytest.raises(ValueError, match="acme_ca_root"):
        render_proxy(ProxySpec(kind, tls, "ops@example.org", SIMPLE_ROUTES, acme_ca_root=name))


def test_caddy_bluegreen_dials_the_stable_address_without_keepalive():
    caddyfile = main_config("caddy-internal")
    assert "import /etc/outpost/proxy/live" not in caddyfile
    block = caddyfile.split("\t\t\tto 127.0.2.1:20000\n")[1].split("\n\t\t}\n")[0]
    assert "\t\t\t\tkeepalive off\n" in block
    # one upstream: no health check or passive marking could route elsewhere, only answer 503
    assert "health_uri" not in block and "fail_duration" not in block and "max_fails" not in block
    assert caddyfile.count("keepalive off") == caddyfile.count("reverse_proxy {")


def test_caddy_every_site_answers_connection_close_while_draining():
    for case in ("caddy-internal", "caddy-none", "caddy-acme"):
        caddyfile = main_config(case)
        snippet = caddyfile.split("(outpost_drain) {\n")[1].split("\n}\n")[0]
        assert "\t@outpost_drain file {\n\t\troot /run/outpost-proxy\n\t\ttry_files /drain\n\t}\n" in snippet
        assert "\theader @outpost_drain Connection close" in snippet
        sites = caddyfile.split("\n}\n")[2:]  # after the global options and the snippet
        sites = [site for site in sites if "{" in site]
        assert sites and all("\timport outpost_drain\n" in site for site in sites), case
    assert "\t\t\tidle 10s\n" in main_config("caddy-internal")


def test_caddy_reload_runs_through_the_drain_tool():
    dropin = files_of("caddy-internal")[proxy.CADDY_DROPIN].content
    assert ("ExecReload=\nExecReload=+/usr/bin/python3 /usr/local/lib/outpost/outpost-proxy-reload --ports 80,443 "
            "--flag /run/outpost-proxy/drain --limit 11 --hold-new-connections -- /usr/bin/caddy reload --config "
            "/etc/caddy/Caddyfile --adapter caddyfile --force --address unix//run/caddy/admin.sock\n") in dropin
    assert "ExecStartPre=+/bin/rm -f /run/outpost-proxy/drain\n" in dropin
    # a hold a killed reload left is lifted on start (it would also end by its own timeout)
    assert "ExecStartPre=-+/usr/sbin/nft flush set inet outpost_proxy_hold held\n" in dropin
    assert "ExecStartPre=+/usr/sbin/nft -f /etc/outpost/proxy/bluegreen.nft\n" in dropin
    assert "ExecStopPost=-+/usr/sbin/nft delete table ip outpost_bluegreen\n" in dropin
    tool = files_of("caddy-internal")[proxy.RELOAD_TOOL]
    assert tool.mode == "0755" and tool.content == proxy.RELOAD_TOOL_SOURCE.read_text()
    plain = files_of("caddy-acme")                       # no blue-green: no DNAT rules, only the hold
    assert "bluegreen" not in plain[proxy.CADDY_DROPIN].content and proxy.BLUEGREEN_RULES not in plain


def test_the_switch_file_is_one_nft_rule_whichever_proxy():
    templates = {kind: proxy.bluegreen_switch_template(kind, PEERBOOK) for kind in proxy.KINDS}
    assert len(set(templates.values())) == 1
    path, template = templates["caddy"]
    assert path == "/etc/outpost/proxy/live/peerbook.nft"
    assert template.endswith("table ip outpost_bluegreen {\n\tchain peerbook {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n\t}\n}\n"
                             "flush chain ip outpost_bluegreen peerbook\n"
                             "add rule ip outpost_bluegreen peerbook ip daddr 127.0.2.1 tcp dport 20000 "
                             "dnat to 127.0.0.1:{port}\n")
    switch = proxy.bluegreen_switch("nginx", PEERBOOK, 20001)
    assert switch.path == path and switch.content.endswith("dnat to 127.0.0.1:20001\n") and switch.mode == "0644"
    assert proxy.switch_argv(path) == ["/usr/sbin/nft", "-f", path]
    assert proxy.switch_validate_argv(path) == ["/usr/sbin/nft", "-c", "-f", "{staged:" + path + "}"]
    rules = files_of("nginx-internal")[proxy.BLUEGREEN_RULES].content
    assert 'include "/etc/outpost/proxy/live/*.nft"\n' in rules


def test_caddy_bundle_is_readable_by_the_caddy_group():
    files = files_of("caddy-internal")
    pem = files["/etc/outpost/tls/api.example.org.pem"]
    assert (pem.mode, pem.owner, pem.group) == ("0640", "root", "caddy")
    assert pem.content == "<secret:tls:api.example.org.crt>\n<secret:tls:api.example.org.key>"
    assert pem.secrets == ("tls:api.example.org.crt", "tls:api.example.org.key")
    assert not [p for p in files if p.endswith((".crt", ".key"))]


def test_caddy_none_answers_unknown_hosts_with_404():
    assert "\nhttp:// {\n\timport outpost_drain\n\trespond 404\n}\n" in main_config("caddy-none")
    assert "\nhttp:// {" not in main_config("caddy-internal")  # would shadow the HTTPS redirects


def test_caddy_acme_and_none_ship_no_certificates():
    for case in ("caddy-acme", "caddy-none", "haproxy-none", "nginx-none"):
        assert not [p for p in files_of(case) if p.startswith(proxy.TLS_DIR)], case


# --- HAProxy ----------------------------------------------------------------------------------

def test_haproxy_retries_health_and_admin_socket():
    cfg = main_config("haproxy-internal")
    for line in ("stats socket /run/haproxy/admin.sock mode 660 user root group haproxy level admin", "retries 3",
                 "option redispatch 1", "retry-on conn-failure empty-response response-timeout",
                 "option httplog", "log stdout format raw local0 info", "option forwardfor",
                 "compression algo gzip", "option httpchk GET /ready HTTP/1.1",
                 "http-check expect status 200", "default-server check inter 2s fall 2 rise 1",
                 "timeout check 1s", "server r8000 127.0.0.1:8000", "server r8001 127.0.0.1:8001",
                 "server r8002 127.0.0.1:8002", "backend kollektivkart", "backend eugene",
                 "http-request disable-l7-retry unless METH_GET || METH_OPTIONS",
                 "http-request redirect scheme https code 308 unless { ssl_fc }",
                 "http-request set-header X-Forwarded-Proto https if { ssl_fc }"):
        assert f"\n{line}\n" in cfg.replace("\t", ""), line
    crts = ("crt /etc/outpost/tls/api.example.org.pem crt /etc/outpost/tls/kollektivkart.example.org.pem "
            "crt /etc/outpost/tls/paths-only.example.org.pem\n")
    assert f"\tbind :443 ssl alpn h2,http/1.1 {crts}" in cfg
    assert f"\tbind [::]:443 v6only ssl alpn h2,http/1.1 {crts}" in cfg
    assert "\tbind :80\n\tbind [::]:80 v6only\n" in cfg
    eugene = cfg.split("backend eugene\n")[1].split("\n\n")[0]
    assert "httpchk" not in eugene and "server r8080 127.0.0.1:8080" in eugene


def test_haproxy_routes_longest_path_first_then_host():
    cfg = main_config("haproxy-internal")
    v2 = cfg.index("use_backend kollektivkart if host0 host0_path0")
    eugene = cfg.index("use_backend eugene if host0 host0_path1")
    rest = cfg.index("use_backend peerbook if host0\n")
    assert v2 < eugene < rest
    assert "acl host0_path0 path -m str /eugene/v2\n" in cfg and "acl host0_path0 path_beg /eugene/v2/\n" in cfg
    assert "default_backend outpost_no_route" in cfg and "http-request return status 404" in cfg


def test_haproxy_bluegreen_backend_dials_the_stable_address_per_request():
    cfg = main_config("haproxy-internal")
    backend = cfg.split("\nbackend peerbook\n")[-1]
    assert "\toption http-server-close\n" in backend and "\tserver r20000 127.0.2.1:20000\n" in backend
    assert "option httpchk" not in backend and "default-server check" not in backend   # one server: no checks
    assert "bluegreen_" not in cfg and "%[str(" not in cfg
    assert cfg.count("option http-server-close") == 1          # replicas keep their server connections
    dropin = files_of("haproxy-internal")[proxy.HAPROXY_DROPIN].content
    assert ("ExecStart=/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg "
            "-p /run/haproxy.pid -S /run/haproxy-master.sock,mode,600\n") in dropin
    assert "ExecReload=/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -c -q" in dropin
    assert "ExecStartPre=/usr/sbin/nft -f /etc/outpost/proxy/bluegreen.nft\n" in dropin
    assert "ExecStopPost=-/usr/sbin/nft delete table ip outpost_bluegreen\n" in dropin
    assert proxy.validate_argv("haproxy", "/x/haproxy.cfg") == ["haproxy", "-c", "-f", "/x/haproxy.cfg"]
    assert proxy.RELOAD_TOOL not in files_of("haproxy-internal")   # HAProxy's own reload is safe


def test_haproxy_keeps_idle_client_connections_through_a_reload():
    for case in ("haproxy-internal", "haproxy-none", "haproxy-empty"):
        defaults = main_config(case).split("\ndefaults\n")[1].split("\nfrontend")[0]
        assert "\toption idle-close-on-response\n" in defaults, case
        assert "\ttimeout http-keep-alive 10s\n" in defaults, case


def test_haproxy_pem_and_none():
    pem = files_of("haproxy-acme-dns")["/etc/outpost/tls/app.example.org.pem"]
    assert pem.content == "<secret:tls:app.example.org.crt>\n<secret:tls:app.example.org.key>"
    assert (pem.mode, pem.owner) == ("0600", "root")
    assert not [p for p in files_of("haproxy-acme-dns") if p.endswith((".crt", ".key"))]
    none = main_config("haproxy-none")
    assert ":443" not in none and "redirect scheme https" not in none and "\tbind [::]:80 v6only\n" in none


# --- nginx ------------------------------------------------------------------------------------

def test_nginx_passive_checks_retries_and_headers():
    conf = main_config("nginx-internal")
    for line in ("server 127.0.0.1:8000 max_fails=1 fail_timeout=2s;",
                 "server 127.0.0.1:8001 max_fails=1 fail_timeout=2s;",
                 "server 127.0.0.1:8002 max_fails=1 fail_timeout=2s;",
                 "proxy_next_upstream error timeout http_502 http_503;", "proxy_next_upstream_tries 3;",
                 "gzip on;", "access_log /var/log/nginx/access.log outpost;",
                 "proxy_set_header X-Forwarded-For $remote_addr;",
                 "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Forwarded-Host $host;",
                 "return 308 https://$host$request_uri;", "ssl_reject_handshake on;",
                 "ssl_certificate /etc/outpost/tls/api.example.org.crt;",
                 "ssl_certificate_key /etc/outpost/tls/api.example.org.key;"):
        assert f"\n{line}\n" in conf.replace("\t", ""), line
    assert "no active health checks" in conf
    assert "non_idempotent" not in conf


def test_nginx_locations_keep_the_prefix():
    conf = main_config("nginx-internal")
    drain = "\t\t\tif (-f /run/outpost-proxy/drain) {\n\t\t\t\treturn 418;\n\t\t\t}\n"
    assert f"location = /eugene {{\n\t\t\tset $outpost_upstream eugene;\n{drain}\t\t\tproxy_pass http://eugene;" in conf
    assert f"location ^~ /eugene/ {{\n\t\t\tset $outpost_upstream eugene;\n{drain}\t\t\tproxy_pass http://eugene;" in conf
    assert conf.index("location = /eugene/v2 {") < conf.index("location = /eugene {")
    paths_only = conf.split("server_name paths-only.example.org;")[2]
    assert f"location / {{\n\t\t\tset $outpost_upstream \"\";\n{drain}\t\t\treturn 404;" in paths_only


def test_nginx_answers_connection_close_while_draining():
    for case in ("nginx-internal", "nginx-none", "nginx-files"):
        conf = main_config(case)
        servers = [block for block in conf.split("\tserver {\n")[1:]]
        routed = [block for block in servers if "proxy_pass" in block]
        assert routed, case
        for block in routed:
            assert "\t\terror_page 418 = @outpost_drain;\n" in block
            assert ("\t\tlocation @outpost_drain {\n\t\t\tkeepalive_timeout 0;\n\t\t\tif ($outpost_upstream = \"\") {\n"
                    "\t\t\t\treturn 404;\n\t\t\t}\n\t\t\tproxy_pass http://$outpost_upstream;\n\t\t}\n") in block
            # every location checks the flag first (the named one excepted)
            assert block.count("if (-f /run/outpost-proxy/drain)") == block.count("\t\tlocation ") - 1
        for block in servers:                        # redirects and unknown hosts keep nothing idle
            if "return 308" in block or "default_server" in block and "ssl_reject_handshake" not in block:
                assert "\t\tkeepalive_timeout 0;\n" in block, block
        assert "\tkeepalive_timeout 10s;\n" in conf and "keepalive 16" not in conf
    dropin = files_of("nginx-internal")[proxy.DROPIN["nginx"]].content
    assert ("ExecReload=\nExecReload=/usr/bin/python3 /usr/local/lib/outpost/outpost-proxy-reload --ports 80,443 "
            "--flag /run/outpost-proxy/drain --limit 11 --old-workers /run/nginx.pid -- /usr/sbin/nginx "
            "-g 'daemon on; master_process on;' -s reload\n") in dropin
    assert "ExecStartPre=/bin/rm -f /run/outpost-proxy/drain\n" in dropin


def test_nginx_bluegreen_upstream_is_the_stable_address():
    conf = main_config("nginx-internal")
    block = conf.split("upstream peerbook {\n")[1].split("}")[0]
    assert "\t\tserver 127.0.2.1:20000;\n" in block and "include" not in block and "keepalive" not in block


def test_nginx_none_and_keys():
    none = main_config("nginx-none")
    assert "ssl" not in none and "listen 80;" in none and "return 308" not in none
    key = files_of("nginx-files")["/etc/outpost/tls/app.example.org.key"]
    assert (key.mode, key.owner, key.group) == ("0600", "root", "root")


# --- everything -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_deterministic_and_independent_of_route_order(case):
    spec = CASES[case]
    first, second = render_proxy(spec), render_proxy(spec)
    assert first == second
    shuffled = list(spec.routes)
    random.Random(7).shuffle(shuffled)
    assert render_proxy(replace(spec, routes=tuple(reversed(shuffled)))) == first
    assert [f.path for f in first] == sorted(f.path for f in first)


@pytest.mark.parametrize("kind", proxy.KINDS)
def test_commands_units_and_packages(kind):
    assert proxy.reload_argv(kind) == ["systemctl", "reload", f"{kind}.service"]
    assert proxy.proxy_unit(kind) == f"{kind}.service"
    assert proxy.proxy_packages(kind) == [kind] + (["nftables"] if kind == "caddy" else [])   # Caddy's reload hold
    assert proxy.proxy_packages(kind, bluegreen=True) == [kind, "nftables"]
    argv = proxy.validate_argv(kind, "/etc/x/.outpost-stage-1/main")
    assert argv[:2] == {"caddy": ["caddy", "validate"], "haproxy": ["haproxy", "-c"],
                        "nginx": ["nginx", "-t"]}[kind]
    assert "/etc/x/.outpost-stage-1/main" in argv


def test_dirs():
    assert [d.path for d in proxy.proxy_dirs(CASES["haproxy-none"])] == ["/etc/outpost/proxy/live"]
    assert [d.path for d in proxy.proxy_dirs(CASES["nginx-internal"])] == [
        "/etc/outpost/proxy/live", "/etc/outpost/tls"]


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_acme_alone_needs_caddy(kind):
    with pytest.raises(ValueError, match="acme-dns"):
        render_proxy(ProxySpec(kind, "acme", "ops@example.org", ROUTES))


def test_root_prefixes_every_owned_path_and_nothing_else():
    spec = CASES["haproxy-internal"]
    plain = render_proxy(spec)
    rooted = render_proxy(spec, root="/tmp/r")
    assert [f.path for f in rooted] == ["/tmp/r" + f.path for f in plain]
    for a, b in zip(plain, rooted):
        assert b.content.replace("/tmp/r/", "/") == a.content
    assert "/run/haproxy/admin.sock" in rooted[0].content


def test_durations():
    assert proxy.duration_ms("2s") == 2000 and proxy.duration_ms("500ms") == 500
    assert proxy.duration_ms("1min 30s") == 90_000 and proxy.duration_ms("3") == 3000
    assert proxy.format_duration(90_000) == "90s" and proxy.format_duration(1500) == "1500ms"
    for bad in ("", "2 weeks", "2s;", "-1s", "0s", "s", "2s\n{", "1e3ms"):
        with pytest.raises(ValueError):
            proxy.duration_ms(bad)


def test_bluegreen_switch_port_must_be_a_slot():
    with pytest.raises(ValueError, match="not one of"):
        proxy.bluegreen_switch("caddy", PEERBOOK, 8000)
    with pytest.raises(ValueError, match="not blue-green"):
        proxy.bluegreen_switch_template("nginx", KOLLEKTIVKART)


# --- injection safety -------------------------------------------------------------------------

BAD_HOSTS = ['app.example.org"', "app'.example.org", "app{x}.example.org", "app.example.org;",
             "app.example.org\nevil", "app example.org", "App.example.org", "*.example.org",
             "app.example.org:443", "", "app.example.org#x", "app..example.org", "-app.example.org",
             "app.example.org/x", "app$host.org"]
BAD_PATHS = ["/x;y", '/x"y', "/x'y", "/x{y}", "/x}", "/x\nproxy_pass evil", "/x y", "x", "/", "/x/",
             "/x/../y", "/$host", "/x#y", "/x%20y", "//x", "/x\ty", "/x\\y"]
BAD_SERVICES = ["Svc", "svc;", "svc name", "svc\n", "1svc", "svc_x", "svc{", "", "svc.x", "-svc"]


@pytest.mark.parametrize("kind", proxy.KINDS)
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_hosts_are_rejected(kind, host):
    with pytest.raises(ValueError, match="route host"):
        render_proxy(ProxySpec(kind, "none", None, (Route(host, None, EUGENE),)))


@pytest.mark.parametrize("kind", proxy.KINDS)
@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_rejected(kind, path):
    with pytest.raises(ValueError, match="route path"):
        render_proxy(ProxySpec(kind, "none", None, (Route("a.example.org", path, EUGENE),)))
    if path == "/":  # a route prefix, never; a health check may probe the root (tests/fuzz)
        return
    with pytest.raises(ValueError, match="route path"):  # the health path too
        render_proxy(ProxySpec(kind, "none", None, (Route("a.example.org", None, replace(EUGENE, health_path=path)),)))


@pytest.mark.parametrize("kind", proxy.KINDS)
@pytest.mark.parametrize("service", BAD_SERVICES)
def test_bad_service_names_are_rejected(kind, service):
    up = replace(PEERBOOK, service=service)
    with pytest.raises(ValueError, match="service name"):
        render_proxy(ProxySpec(kind, "none", None, (Route("a.example.org", None, up),)))
    with pytest.raises(ValueError, match="service name"):
        proxy.bluegreen_switch_template(kind, up)


@pytest.mark.parametrize("kind", proxy.KINDS)
@pytest.mark.parametrize("field,value", [
    ("ports", ()), ("ports", (0,)), ("ports", (70000,)), ("ports", (8000, 8000)), ("ports", ("8000",)),
    ("ports", [8000]), ("ports", (True,)), ("health_interval", "2s; evil"), ("health_timeout", "1s\n}"),
    ("bluegreen", True),  # EUGENE has one port: blue-green needs two
])
def test_bad_upstreams_are_rejected(kind, field, value):
    with pytest.raises(ValueError):
        render_proxy(ProxySpec(kind, "none", None, (Route("a.example.org", None, replace(EUGENE, **{field: value})),)))


@pytest.mark.parametrize("email,acme_ca", [('ops"@example.org', None), ("ops@example.org\n}", None),
                                           ("ops @example.org", None), (None, "https://ca.test/dir\n{"),
                                           (None, 'https://ca.test/"dir'), (None, "https://ca.test/dir?x={y}"),
                                           (None, "ftp://ca.test/dir"), (None, "https://ca.test/d ir")])
def test_bad_email_and_acme_ca_are_rejected(email, acme_ca):
    with pytest.raises(ValueError):
        render_proxy(ProxySpec("caddy", "acme", email, ROUTES, acme_ca=acme_ca))


def test_bad_kind_tls_root_and_duplicates_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        render_proxy(ProxySpec("apache", "none", None, ROUTES))
    with pytest.raises(ValueError, match="tls"):
        render_proxy(ProxySpec("caddy", "selfsigned", None, ROUTES))
    with pytest.raises(ValueError, match="root"):
        render_proxy(CASES["caddy-none"], root="/tmp/a b")
    with pytest.raises(ValueError, match="twice"):
        render_proxy(ProxySpec("caddy", "none", None, ROUTES + (Route("api.example.org", "/eugene", EUGENE),)))
    with pytest.raises(ValueError, match="two different upstreams"):
        render_proxy(ProxySpec("caddy", "none", None, ROUTES + (
            Route("other.example.org", None, replace(EUGENE, ports=(9999,))),)))
    with pytest.raises(ValueError, match="kind"):
        proxy.validate_argv("apache", "/etc/apache2/apache2.conf")


@pytest.mark.parametrize("value", ["a b", "a;b", "a{b", 'a"b', "a\nb", "$x", "%[x]", "a#b", None, True])
def test_template_environment_refuses_unsafe_values(value):
    with pytest.raises(ValueError, match="refusing to render"):
        proxy._safe(value)
