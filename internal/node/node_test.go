package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/client"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/testutil"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Wrap(m)) }

// loopback is every listener of a test node on 127.0.0.1, port 0: the kernel picks free
// ports, so any number of nodes start side by side with no collision.
var loopback = []string{"--sip-addr", "127.0.0.1:0", "--sip-tls-addr", "127.0.0.1:0",
	"--api-addr", "127.0.0.1:0", "--p2p-addr", "/ip4/127.0.0.1/tcp/0"}

func load(t testing.TB, args ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(append(append([]string{"--data-dir", t.TempDir()}, loopback...), args...),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startNode starts a node in this process and closes it when the test ends.
func startNode(t *testing.T, cfg *config.Config) (*Node, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	n, err := New(cfg, Options{Version: "test", Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n, logs
}

// probe sends one OPTIONS datagram as a scanner would, from src (a 127/8 address).
func probe(t *testing.T, to, src, number string) { probeOver(t, "udp", to, src, number) }

// probeTCP sends the probe over TCP from src: a source that completed a handshake, proven.
func probeTCP(t *testing.T, to, src, number string) { probeOver(t, "tcp", to, src, number) }

func probeOver(t *testing.T, network, to, src, number string) {
	t.Helper()
	local := &net.UDPAddr{IP: net.ParseIP(src)}
	d := net.Dialer{LocalAddr: local}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial(network, to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "OPTIONS sip:" + number + "@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/" + strings.ToUpper(network) + " " + c.LocalAddr().String() + ";branch=z9hG4bK-1\r\n" +
		"From: <sip:100@" + src + ">;tag=1\r\nTo: <sip:" + number + "@127.0.0.1>\r\nCall-ID: node-test\r\nCSeq: 1 OPTIONS\r\n" +
		"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func apiClient(n *Node) *client.Client {
	return client.New("http://" + n.Addrs().API)
}

func servesIP(t *testing.T, n *Node, ip string) bool {
	t.Helper()
	l, err := apiClient(n).IP(context.Background(), ip)
	if err != nil {
		t.Fatal(err)
	}
	return l.Known
}

// Several nodes start in one process on port 0 with every listener, report distinct bound
// addresses, capture on them and serve what they captured. Run with -race -count=3: no port
// is probed and released, so none can be taken in between.
func TestNodesStartSideBySideOnPortZero(t *testing.T) {
	const count = 3
	seen := map[string]bool{}
	var nodes []*Node
	for i := range count {
		args := []string{"-a", "-j"}
		if i > 0 {
			args = append(args, "-p", "-b", nodes[0].Addrs().P2P[0])
		} else {
			args = append(args, "-p")
		}
		n, _ := startNode(t, load(t, args...))
		a := n.Addrs()
		for _, addr := range append([]string{a.SIPUDP, a.SIPTCP, a.SIPTLS, a.API}, a.P2P...) {
			if addr == "" || strings.HasSuffix(addr, ":0") || strings.HasSuffix(addr, "/tcp/0") {
				t.Fatalf("node %d: unbound address in %+v", i, a)
			}
		}
		for _, addr := range []string{"udp " + a.SIPUDP, "tcp " + a.SIPTCP, "tcp " + a.SIPTLS, "tcp " + a.API} {
			if seen[addr] {
				t.Fatalf("node %d: %s is taken twice", i, addr)
			}
			seen[addr] = true
		}
		if a.SIPUDP != a.SIPTCP {
			t.Errorf("node %d: SIP UDP %s and TCP %s differ: one --sip-addr is one port", i, a.SIPUDP, a.SIPTCP)
		}
		nodes = append(nodes, n)
	}
	for i, n := range nodes {
		src := fmt.Sprintf("127.0.0.%d", 10+i)
		probe(t, n.Addrs().SIPUDP, src, "0046812118532")
		testutil.Eventually(t, fmt.Sprintf("node %d stores its probe", i), 10*time.Second, func() bool { return servesIP(t, n, src) })
	}
}

// A signed event from another node is stored (and served, with its provenance) but reaches
// neither syslog (so no Fail2Ban ban here) nor the JSON log, and is not published again;
// with --syslog-peer-events and --json-log-peer-events it reaches both.
func TestPeerEventsAreRoutedByOnePolicy(t *testing.T) {
	// Loopback sources stand for internet ones here: the default never-block ranges are off,
	// and 127.0.0.40 is named instead.
	origin, _ := startNode(t, load(t, "-p", "-a", "--never-block-defaults=false", "--never-block", "127.0.0.40"))
	for _, optIn := range []bool{false, true} {
		t.Run(fmt.Sprintf("opt-in=%v", optIn), func(t *testing.T) {
			rcv := testutil.NewSyslogReceiver(t)
			args := []string{"-p", "-a", "-j", "-s", "--syslog-addr", "unix://" + rcv.Path, "-b", origin.Addrs().P2P[0], "--never-block-defaults=false"}
			if optIn {
				args = append(args, "--syslog-peer-events", "--json-log-peer-events")
			}
			cfg := load(t, args...)
			listener, _ := startNode(t, cfg)
			testutil.Eventually(t, "the listener joins the origin's topic", 15*time.Second, func() bool {
				return listener.peer.Report().TopicPeers() > 0 && origin.peer.Report().TopicPeers() > 0
			})
			time.Sleep(time.Second) // a publish in the mesh's first moments can be lost
			src := "127.0.0.20"
			if optIn {
				src = "127.0.0.21"
			}
			// A local probe on the listener: its own events go everywhere, whatever the routes.
			probeTCP(t, listener.Addrs().SIPTCP, "127.0.0.30", "100")
			// Not shared: an unproven UDP source (anyone can forge one), and a never-block
			// address over TCP.
			probe(t, origin.Addrs().SIPUDP, "127.0.0.41", "0046812118532")
			probeTCP(t, origin.Addrs().SIPTCP, "127.0.0.40", "0046812118532")
			testutil.Eventually(t, "the origin stores its probes", 10*time.Second, func() bool {
				return servesIP(t, origin, "127.0.0.41") && servesIP(t, origin, "127.0.0.40")
			})
			probeTCP(t, origin.Addrs().SIPTCP, src, "0046812118532")
			testutil.Eventually(t, "the listener stores the origin's event", 15*time.Second, func() bool { return servesIP(t, listener, src) })
			if servesIP(t, listener, "127.0.0.41") || servesIP(t, listener, "127.0.0.40") {
				t.Error("an unproven or never-block source reached a peer")
			}
			testutil.Eventually(t, "the listener logs its own probe", 5*time.Second, func() bool { return rcv.Has("Source IP: 127.0.0.30,") })
			lookup, err := apiClient(listener).IP(context.Background(), src)
			if err != nil || !lookup.Known {
				t.Fatalf("lookup of the peer's report: %+v %v", lookup, err)
			}
			// Let every queue drain, then look at the sinks.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := listener.Close(ctx); err != nil {
				t.Fatal(err)
			}
			jl, err := os.ReadFile(cfg.JSONLogFile)
			if err != nil {
				t.Fatal(err)
			}
			if got := rcv.Has("Source IP: " + src + ","); got != optIn {
				t.Errorf("syslog line for the peer's event: %v, want %v", got, optIn)
			}
			if got := bytes.Contains(jl, []byte(`"source_ip":"`+src+`"`)); got != optIn {
				t.Errorf("JSON log line for the peer's event: %v, want %v", got, optIn)
			}
			if !bytes.Contains(jl, []byte(`"source_ip":"127.0.0.30"`)) {
				t.Error("the listener's own event is missing from its JSON log")
			}
			if st := listener.peer.Report(); st.Published != 1 || st.Received == 0 {
				t.Errorf("listener p2p stats %+v: want its one own event published, the peer's received and not published again", st)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want map[string]bool
	}{
		{nil, map[string]bool{"sqlite": true, "jsonlog": false, "syslog": false, "webhook": false, "p2p": false}},
		{[]string{"--json-log-peer-events", "--syslog-peer-events", "--webhook-peer-events"},
			map[string]bool{"sqlite": true, "jsonlog": true, "syslog": true, "webhook": true, "p2p": false}},
	} {
		got := Routes(load(t, c.args...))
		for sink, want := range c.want {
			if got[sink] != want {
				t.Errorf("%v: peer events to %s = %v, want %v", c.args, sink, got[sink], want)
			}
		}
	}
}

// New has no side effects: no data directory, no file, no goroutine.
func TestNewTouchesNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := load(t, "-p", "-a", "-j", "-w", "http://127.0.0.1:9/hook")
	cfg.DataDir = filepath.Join(t.TempDir(), "not-yet")
	cfg.DBFile, cfg.JSONLogFile = filepath.Join(cfg.DataDir, "d.db"), filepath.Join(cfg.DataDir, "j.log")
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Errorf("New created %s: %v", cfg.DataDir, err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("Close without Start: %v", err)
	}
	if a := n.Addrs(); a.SIPUDP != "" || a.API != "" || a.P2P != nil {
		t.Errorf("addresses before Start: %+v", a)
	}
}

// A Start that fails half-way (the API's port is taken, after the store, the sinks, the hub
// and p2p are up) closes what it opened: no goroutine is left, the database is closed
// cleanly, and the error says what to do.
func TestFailedStartClosesWhatItOpened(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := load(t, "-p", "-a", "-j", "--api-addr", taken.Addr().String())
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--api-addr") {
		t.Fatalf("Start with the API port taken: %v, want an error naming --api-addr", err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("Close after the failed Start: %v", err)
	}
	goleak.VerifyNone(t)
	if _, err := os.Stat(cfg.DBFile + "-wal"); err == nil {
		if fi, _ := os.Stat(cfg.DBFile + "-wal"); fi.Size() != 0 {
			t.Errorf("the WAL was not checkpointed: the store was not closed")
		}
	}
	// The data directory is usable by the next start.
	cfg.APIAddr = "127.0.0.1:0"
	startNode(t, cfg)
}

// --ready-file holds every bound address once the node listens, and is gone after Close.
func TestReadyFile(t *testing.T) {
	cfg := load(t, "-a", "-p")
	cfg.ReadyFile = filepath.Join(t.TempDir(), "ready.json")
	n, _ := startNode(t, cfg)
	b, err := os.ReadFile(cfg.ReadyFile)
	if err != nil {
		t.Fatal(err)
	}
	var got Addrs
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := n.Addrs()
	if got.SIPUDP != want.SIPUDP || got.SIPTLS != want.SIPTLS || got.API != want.API || got.PeerID != want.PeerID || len(got.P2P) == 0 {
		t.Errorf("ready file %s, want %+v", b, want)
	}
	if got.PID != os.Getpid() {
		t.Errorf("ready file names pid %d, want %d", got.PID, os.Getpid())
	}
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.ReadyFile); !os.IsNotExist(err) {
		t.Errorf("ready file left after Close: %v", err)
	}
}

// A ready file left by a killed node is removed when the next one starts; one whose process
// still runs is not, and a node that fails to start does not remove a file it did not write.
func TestStaleReadyFile(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		content string
		kept    bool
	}{
		{"dead pid", fmt.Sprintf(`{"pid": %d, "api": "127.0.0.1:1"}`, dead.Process.Pid), false},
		{"garbage", "not json", false},
		{"no pid", `{"api": "127.0.0.1:1"}`, false},
		{"live pid", fmt.Sprintf(`{"pid": %d, "api": "127.0.0.1:1"}`, os.Getppid()), true},
	} {
		path := filepath.Join(dir, c.name+".json")
		os.WriteFile(path, []byte(c.content), 0o644)
		removeStaleReadyFile(path)
		if _, err := os.Stat(path); (err == nil) != c.kept {
			t.Errorf("%s: kept %v, want %v", c.name, err == nil, c.kept)
		}
	}
	// Another node's file survives this node's failed start.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := load(t, "-a", "--api-addr", taken.Addr().String())
	cfg.ReadyFile = filepath.Join(dir, "live pid.json")
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("started with the API port taken")
	}
	n.Close(context.Background())
	if _, err := os.Stat(cfg.ReadyFile); err != nil {
		t.Errorf("a failed start removed another node's ready file: %v", err)
	}
}

// At the notice level (the default) a node prints its start-up summary and nothing else while
// it captures.
func TestStartupSummaryIsTheOnlyLine(t *testing.T) {
	cfg := load(t, "-a", "-p", "-j")
	var logs testutil.SyncBuffer
	n, err := New(cfg, Options{Version: "9.9.9", Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: LevelNotice}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		probe(t, n.Addrs().SIPUDP, "127.0.0.40", fmt.Sprint(100+i))
	}
	testutil.Eventually(t, "the probes are stored", 10*time.Second, func() bool { return servesIP(t, n, "127.0.0.40") })
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines at the default level, want the summary alone:\n%s", len(lines), logs.String())
	}
	a := n.Addrs()
	for _, want := range []string{`msg="dialtrap running"`, "version=9.9.9", "data_dir=" + cfg.DataDir,
		"sip_udp=" + a.SIPUDP, "sip_tls=" + a.SIPTLS, "api=" + a.API, "peer_id=" + a.PeerID, "json_log="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("summary lacks %q: %s", want, lines[0])
		}
	}
}

// Nodes started at once on one fresh data directory: exactly one runs, the others say the
// directory is in use (by whom) and exit, and what the winner made (node id, keys, TLS pair,
// database) is whole. The loser's Close leaves the winner's files alone.
func TestOneNodePerDataDirectory(t *testing.T) {
	for run := range 5 {
		dir := t.TempDir()
		const count = 3
		nodes := make([]*Node, count)
		errs := make(chan error, count)
		for i := range count {
			cfg := load(t, "-p", "-a", "-j")
			cfg.DataDir, cfg.DBFile, cfg.JSONLogFile = dir, filepath.Join(dir, "dialtrap.db"), filepath.Join(dir, "dialtrap_json.log")
			n, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			nodes[i] = n
			go func() { errs <- n.Start(context.Background()) }()
		}
		started := 0
		for range count {
			err := <-errs
			switch {
			case err == nil:
				started++
			case !strings.Contains(err.Error(), "is in use by another dialtrap node"):
				t.Errorf("run %d: %v, want the directory in use by this process", run, err)
			}
		}
		for _, n := range nodes {
			if err := n.Close(context.Background()); err != nil {
				t.Errorf("run %d: close: %v", run, err)
			}
		}
		if started != 1 {
			t.Fatalf("run %d: %d nodes started on one data directory, want 1", run, started)
		}
		// The next start finds everything whole.
		cfg := load(t, "-p", "-a")
		cfg.DataDir, cfg.DBFile = dir, filepath.Join(dir, "dialtrap.db")
		startNode(t, cfg)
	}
}

// A node with the BGP speaker and the policy agent: both answer in the API, the agent's
// addresses are known, and Close leaves no goroutine of either (GoBGP's included). A bad
// option is refused by New, a taken port by Start, which closes what it opened.
func TestBGPAndPolicyLifecycle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a BGP neighbour that never answers
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	bgpArgs := []string{"--bgp-asn", "65000", "--bgp-router-id", "127.0.0.1", "--bgp-neighbor", fmt.Sprintf("127.0.0.2 as 65001 port %d", port)}
	cfg := load(t, append([]string{"-a", "--policy-addr", "127.0.0.1:0"}, bgpArgs...)...)
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := n.Addrs()
	if a.PolicyUDP == "" || a.PolicyTCP == "" {
		t.Fatalf("no policy agent addresses: %+v", a)
	}
	for _, route := range []string{"/bgp", "/policy"} {
		resp, err := http.Get("http://" + a.API + route)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", route, resp.Status)
		}
	}
	if err := n.ReloadNeverBlock(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bgp-neighbor", "127.0.0.2 as 65001"}, "--bgp-asn"},
		{[]string{"--bgp-asn", "1", "--bgp-neighbor", "127.0.0.2 as 65001"}, "--bgp-router-id"},
		{append(bgpArgs, "--bgp-neighbor", "router1 as 2"), "not an IP address"},
		{append(bgpArgs, "--bgp-next-hop", "::1,::2"), "two IPv6"},
		{append(bgpArgs, "--bgp-community", "65536:1"), "--bgp-community"},
		{append(bgpArgs, "--bgp-verified", "maybe"), "--bgp-verified"},
		{[]string{"--policy-addr", "127.0.0.1:0", "--policy-deny", "http://ivr"}, "--policy-deny"},
	} {
		if _, err := New(load(t, tc.args...), Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q): %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	n, err = New(load(t, "--policy-addr", taken.Addr().String()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "--policy-addr") {
		t.Fatalf("Start with the policy port taken: %v, want an error naming --policy-addr", err)
	}
	n.Close(context.Background())
	goleak.VerifyNone(t)
}

// The dashboard is served at / of the API unless --dashboard=false; its live feed gets this
// node's own probes.
func TestDashboardFlag(t *testing.T) {
	for _, on := range []bool{true, false} {
		n, _ := startNode(t, load(t, "-a", fmt.Sprintf("--dashboard=%v", on)))
		resp, err := http.Get("http://" + n.Addrs().API + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if resp.StatusCode != want || (on != (n.live != nil)) {
			t.Errorf("--dashboard=%v: GET / %d, live feed %v", on, resp.StatusCode, n.live != nil)
		}
	}
}
