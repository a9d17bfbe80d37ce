package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dialtrap.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env())
	if err != nil {
		t.Fatal(err)
	}
	if c.SIPAddr != ":5060" || c.SIPTLSAddr != ":5061" || c.APIAddr != "127.0.0.1:8082" ||
		c.DBFile != "dialtrap.db" || c.JSONLog || c.SIPResponsive || !c.SIPTLS || c.Store != "sqlite" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestCombinedShortFlags(t *testing.T) {
	c, err := Load([]string{"-draps"}, env())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug || !c.SIPResponsive || !c.API || !c.P2P || !c.Syslog || c.JSONLog {
		t.Errorf("-draps gave %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "sip-addr = \":7000\"\npersona = \"file\"\nverbose = true\napi-addr = \"127.0.0.1:9000\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]\nretention = \"48h\"\nsip-max-conns = 7\nstore-spool-max = 33554432\n")
	tests := []struct {
		name  string
		args  []string
		env   func(string) (string, bool)
		check func(*Config) bool
	}{
		{"default", nil, env(), func(c *Config) bool { return c.SIPAddr == ":5060" }},
		{"file over default", []string{"-g", file}, env(), func(c *Config) bool {
			return c.SIPAddr == ":7000" && c.Verbose && c.Retention == 48*time.Hour && c.SIPMaxConns == 7 && c.StoreSpoolMax == 32<<20 &&
				reflect.DeepEqual(c.Bootstrap, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"})
		}},
		{"env over file", []string{"-g", file}, env("DIALTRAP_SIP_ADDR", ":7001"), func(c *Config) bool {
			return c.SIPAddr == ":7001" && c.Persona == "file"
		}},
		{"retention in days", []string{"--retention", "90d"}, env(), func(c *Config) bool { return c.Retention == 90*24*time.Hour }},
		{"fold window default", nil, env(), func(c *Config) bool { return c.FoldWindow == time.Second }},
		{"commit wait default", nil, env(), func(c *Config) bool { return c.CommitWait == DefaultCommitWait }},
		{"commit wait off", []string{"--commit-wait", "0"}, env(), func(c *Config) bool { return c.CommitWait == 0 }},
		{"commit wait from env", nil, env("DIALTRAP_COMMIT_WAIT", "1s"), func(c *Config) bool { return c.CommitWait == time.Second }},
		{"fold window off", []string{"--fold-window", "0"}, env(), func(c *Config) bool { return c.FoldWindow == 0 }},
		{"fold window from env", nil, env("DIALTRAP_FOLD_WINDOW", "250ms"), func(c *Config) bool { return c.FoldWindow == 250*time.Millisecond }},
		{"retention in days from env", nil, env("DIALTRAP_RETENTION", "7d"), func(c *Config) bool { return c.Retention == 7*24*time.Hour }},
		{"store spool default", nil, env(), func(c *Config) bool { return c.StoreSpoolMax == 1<<30 }},
		{"store spool from env", nil, env("DIALTRAP_STORE_SPOOL_MAX", "67108864"), func(c *Config) bool { return c.StoreSpoolMax == 64<<20 }},
		{"flag over env", []string{"-g", file, "--sip-addr", ":7002"}, env("DIALTRAP_SIP_ADDR", ":7001"), func(c *Config) bool {
			return c.SIPAddr == ":7002"
		}},
		{"config path from env", nil, env("DIALTRAP_CONFIG", file), func(c *Config) bool {
			return c.SIPAddr == ":7000" && c.ConfigFile == file
		}},
		{"env false overrides file true", []string{"-g", file}, env("DIALTRAP_VERBOSE", "off"), func(c *Config) bool { return !c.Verbose }},
		{"env bool 0 enables", nil, env("DIALTRAP_SIP_RESPONSIVE", "0"), func(c *Config) bool { return c.SIPResponsive }},
		{"env bool empty enables", nil, env("DIALTRAP_API", ""), func(c *Config) bool { return c.API }},
		{"env bool No disables", nil, env("DIALTRAP_API", "No"), func(c *Config) bool { return !c.API }},
		{"env bool FALSE disables", nil, env("DIALTRAP_SYSLOG", "FALSE"), func(c *Config) bool { return !c.Syslog }},
		{"flag beats env false", []string{"-a"}, env("DIALTRAP_API", "false"), func(c *Config) bool { return c.API }},
		{"legacy env fallback", nil, env("SENTRYPEER_SIP_RESPONSIVE", "1", "SENTRYPEER_DB_FILE", "/tmp/x.db"), func(c *Config) bool {
			return c.SIPResponsive && c.DBFile == "/tmp/x.db" && len(c.Notices) == 2 &&
				strings.Contains(c.Notices[0]+c.Notices[1], "rename it to DIALTRAP_DB_FILE")
		}},
		{"legacy special names", nil, env("SENTRYPEER_PEER_TO_PEER", "1", "SENTRYPEER_BOOTSTRAP_NODE", "/ip4/127.0.0.1/tcp/4222"), func(c *Config) bool {
			return c.P2P && len(c.Bootstrap) == 1
		}},
		{"new name wins over legacy", nil, env("SENTRYPEER_JSON_LOG_FILE", "old.log", "DIALTRAP_JSON_LOG_FILE", "new.log"), func(c *Config) bool {
			return c.JSONLogFile == "new.log" && c.JSONLog && len(c.Notices) == 0
		}},
		{"-l enables -j", []string{"-l", "/tmp/j.log"}, env(), func(c *Config) bool { return c.JSONLog && c.JSONLogFile == "/tmp/j.log" }},
		{"defaults live in data dir", []string{"--data-dir", "/var/lib/dt"}, env(), func(c *Config) bool {
			return c.DBFile == "/var/lib/dt/dialtrap.db" && c.JSONLogFile == "/var/lib/dt/dialtrap_json.log"
		}},
		{"named db stays as given", []string{"--data-dir", "/var/lib/dt", "-f", "x.db"}, env(), func(c *Config) bool { return c.DBFile == "x.db" }},
		{"event compat default", nil, env(), func(c *Config) bool { return c.EventCompat == "none" }},
		{"event compat flag", []string{"--event-compat", "ip-port"}, env(), func(c *Config) bool { return c.EventCompat == "ip-port" }},
		{"event compat from env", nil, env("DIALTRAP_EVENT_COMPAT", "ip-port"), func(c *Config) bool { return c.EventCompat == "ip-port" }},
		{"event compat empty env is none", nil, env("DIALTRAP_EVENT_COMPAT", ""), func(c *Config) bool { return c.EventCompat == "" }},
		{"event compat from file", []string{"-g", writeFile(t, "event-compat = \"ip-port\"\n")}, env(), func(c *Config) bool { return c.EventCompat == "ip-port" }},
		{"event compat flag over file", []string{"-g", writeFile(t, "event-compat = \"ip-port\"\n"), "--event-compat", "none"}, env(), func(c *Config) bool {
			return c.EventCompat == "none"
		}},
		{"repeatable bootstrap", []string{"-b", "/ip4/127.0.0.1/tcp/1", "-b", "/ip4/127.0.0.1/tcp/2,/ip4/127.0.0.1/tcp/3"}, env(), func(c *Config) bool {
			return len(c.Bootstrap) == 3
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config: %+v", c)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  func(string) (string, bool)
		want string
	}{
		{"unknown flag", []string{"--nope"}, env(), "unknown flag"},
		{"unknown short flag", []string{"-x"}, env(), "unknown shorthand"},
		{"secret without id", []string{"-c", "s"}, env(), "needs -i"},
		{"id without secret", []string{"-i", "id"}, env(), "needs -c"},
		{"cert without key", []string{"-t", "cert.pem"}, env(), "go together"},
		{"bad sip addr", []string{"--sip-addr", "5060"}, env(), "not host:port"},
		{"bad store", []string{"--store", "mysql://x"}, env(), "--store"},
		{"bad store hides its password", []string{"--store", "mysql://u:s3cretPW@db/x"}, env(), `"mysql://u:xxxxx@db/x"`},
		{"unparseable store hides it all", []string{"--store", "mysql://u:s3%zz@db/x"}, env(), "(a URL not shown"},
		{"bad number match", nil, env("DIALTRAP_NUMBER_MATCH", "fuzzy"), "--number-match"},
		{"bad event compat", []string{"--event-compat", "ip:port"}, env(), `--event-compat "ip:port": use none (the default) or ip-port`},
		{"bad event compat from env", nil, env("DIALTRAP_EVENT_COMPAT", "IP-PORT"), "--event-compat"},
		{"bad event compat from file", []string{"-g", writeFile(t, "event-compat = \"tpot\"\n")}, env(), "--event-compat \"tpot\""},
		{"opendht host", []string{"--opendht", "--opendht-addr", "192.0.2.1:4222"}, env(), "--opendht-addr \"192.0.2.1:4222\": give :PORT"},
		{"opendht port", []string{"--opendht", "--opendht-addr", ":70000"}, env(), "--opendht-addr \":70000\""},
		{"opendht bootstrap without port", []string{"--opendht", "--opendht-bootstrap", "192.0.2.1"}, env(), "--opendht-bootstrap \"192.0.2.1\": give host:port"},
		{"opendht relay without p2p", []string{"--opendht", "--opendht-relay"}, env(), "--opendht-relay publishes"},
		{"opendht negative sightings", nil, env("DIALTRAP_OPENDHT", "1", "DIALTRAP_OPENDHT_MIN_SIGHTINGS", "-1"), "--opendht-min-sightings"},
		{"tiny spool", []string{"--webhook-spool-max", "1000"}, env(), "--webhook-spool-max"},
		{"tiny store spool", []string{"--store-spool-max", "1048576"}, env(), "--store-spool-max"},
		{"no concurrency", []string{"--webhook-concurrency", "0"}, env(), "--webhook-concurrency"},
		{"zero timeout", nil, env("DIALTRAP_WEBHOOK_TIMEOUT", "0s"), "--webhook-timeout"},
		{"no p2p rate", []string{"--p2p-rate", "0"}, env(), "--p2p-rate"},
		{"catch-up too long", []string{"--p2p-catchup", "1000h"}, env(), "--p2p-catchup"},
		{"no sightings", nil, env("DIALTRAP_P2P_MIN_SIGHTINGS", "0"), "--p2p-min-sightings"},
		{"stray argument", []string{"now"}, env(), "unexpected argument"},
		{"bad env duration", nil, env("DIALTRAP_RETENTION", "forever"), "DIALTRAP_RETENTION"},
		{"retention in part days", []string{"--retention", "1.5d"}, env(), "whole days"},
		{"fold window too long", []string{"--fold-window", "2m"}, env(), "--fold-window"},
		{"commit wait too long", []string{"--commit-wait", "2s"}, env(), "--commit-wait"},
		{"commit wait negative", []string{"--commit-wait=-1ms"}, env(), "--commit-wait"},
		{"fold window negative", []string{"--fold-window=-1s"}, env(), "--fold-window"},
		{"missing config file", []string{"-g", "/nonexistent/dialtrap.toml"}, env(), "read config file"},
		{"unknown config key", []string{"-g", writeFile(t, "sip_addr = \":1\"\n")}, env(), "unknown key \"sip_addr\""},
		{"config key config", []string{"-g", writeFile(t, "config = \"x\"\n")}, env(), "unknown key \"config\""},
		{"bad config type", []string{"-g", writeFile(t, "sip-max-conns = \"many\"\n")}, env(), "sip-max-conns"},
		{"bad toml", []string{"-g", writeFile(t, "sip-addr = \n")}, env(), "read config file"},
		{"no prefixes", []string{"--bgp-max-prefixes", "0"}, env(), "--bgp-max-prefixes"},
		{"negative bgp ttl", []string{"--bgp-ttl", "-1h"}, env(), "--bgp-ttl"},
		{"bad asn", []string{"--bgp-asn", "4294967296"}, env(), "bgp-asn"},
		{"bad policy addr", nil, env("DIALTRAP_POLICY_ADDR", "5070"), "--policy-addr"},
		{"no policy count", []string{"--policy-min-count", "0"}, env(), "--policy-min-count"},
		{"policy on the SIP port", []string{"--policy-addr", "127.0.0.1:5060"}, env(), "share a port"},
		{"policy on the API port", []string{"-a", "--policy-addr", "127.0.0.1:8082"}, env(), "share a port"},
		{"policy source", []string{"--policy-source", "peers"}, env(), "--policy-source"},
		{"policy hops", []string{"--policy-trusted-hops", "0"}, env(), "--policy-trusted-hops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// Neighbours hold spaces, not commas: a list of them is a plain list in every source.
func TestBGPNeighbourLists(t *testing.T) {
	want := []string{"192.0.2.1 as 65001 ttl-security", "2001:db8::1 as 65002 port 1179"}
	for name, tc := range map[string]struct {
		args []string
		env  func(string) (string, bool)
	}{
		"flags":       {[]string{"--bgp-neighbor", want[0], "--bgp-neighbor", want[1]}, env()},
		"comma flag":  {[]string{"--bgp-neighbor", want[0] + "," + want[1]}, env()},
		"environment": {nil, env("DIALTRAP_BGP_NEIGHBOR", want[0]+","+want[1])},
		"toml list":   {[]string{"-g", writeFile(t, "bgp-neighbor = [\""+want[0]+"\", \""+want[1]+"\"]\nbgp-asn = 65000\n")}, env()},
	} {
		c, err := Load(tc.args, tc.env)
		if err != nil || !reflect.DeepEqual(c.BGPNeighbor, want) {
			t.Errorf("%s: %q, %v; want %q", name, c.BGPNeighbor, err, want)
		}
	}
}

// Options of a part that is off are named in a notice.
func TestOffPartNotices(t *testing.T) {
	c, err := Load([]string{"--bgp-asn", "65000", "--policy-deny", "404"}, env("DIALTRAP_BGP_ROUTER_ID", "192.0.2.10"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.Notices, "\n")
	for _, want := range []string{"--bgp-asn, --bgp-router-id set but no --bgp-neighbor", "--policy-deny set but no --policy-addr"} {
		if !strings.Contains(got, want) {
			t.Errorf("notices %q lack %q", got, want)
		}
	}
	c, err = Load([]string{"--bgp-asn", "65000", "--bgp-neighbor", "192.0.2.1 as 65001", "--policy-addr", "127.0.0.1:5070", "--policy-deny", "404"}, env())
	if err != nil || len(c.Notices) != 0 {
		t.Fatalf("notices with both parts on: %q, %v", c.Notices, err)
	}
}

func TestPeerOptionsWithoutP2P(t *testing.T) {
	c, err := Load([]string{"-b", "/ip4/127.0.0.1/tcp/4222/p2p/x", "--p2p-min-sightings", "2"}, env())
	if err != nil || len(c.Notices) != 1 || !strings.Contains(c.Notices[0], "-p/--p2p is not") {
		t.Errorf("notices %q (%v), want one saying -p is off", c.Notices, err)
	}
	c, err = Load([]string{"-p", "-b", "/ip4/127.0.0.1/tcp/4222/p2p/x", "--p2p-catchup", "0"}, env())
	if err != nil || len(c.Notices) != 0 || c.P2PCatchup != 0 || c.P2PRate != 200 {
		t.Errorf("with -p: %+v %v", c.Notices, err)
	}
}

func TestHelp(t *testing.T) {
	if _, err := Load([]string{"-h"}, env()); err != ErrHelp {
		t.Errorf("-h gave %v", err)
	}
	u := Usage("")
	for _, want := range []string{"-f, --db-file", "[DIALTRAP_DB_FILE]", "-z, --sip-tls-addr", "--api-token", "-draps", "--store-spool-max int", "[DIALTRAP_STORE_SPOOL_MAX]"} {
		if !strings.Contains(u, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}
