package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// flood sends copies of msg to addr from one socket until stop is closed; it returns how many
// were sent, and a channel closed once the sender has stopped.
func flood(t *testing.T, addr string, msg []byte, stop <-chan struct{}) (*atomic.Int64, <-chan struct{}) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(msg); err == nil {
				sent.Add(1)
			}
			if sent.Load()%200 == 0 {
				time.Sleep(time.Millisecond) // about 100-200k/s: a fast scan, not a kernel drop test
			}
		}
	}()
	return &sent, done
}

// noFold keeps one event a probe (--fold-window 0), for tests of what a row a probe costs.
var noFold = []string{"--fold-window", "0"}

var probe = []byte("INVITE sip:0046500729221@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n" +
	"From: <sip:100@127.0.0.1>;tag=1\r\nTo: <sip:0046500729221@127.0.0.1>\r\nCall-ID: flood\r\nCSeq: 1 INVITE\r\n" +
	"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n")

// kill -9 in the middle of a flood, then restart: the database is intact and the node works.
func TestKill9MidFloodThenRestart(t *testing.T) {
	n := startNode(t, nodeOpts{args: noFold}) // a row a probe: the store works hard
	id := n.nodeID()
	stop := make(chan struct{})
	flood(t, fmt.Sprintf("127.0.0.1:%d", n.port), probe, stop)
	// Kill only once the store has committed several batches (of at most 1,000 events), with
	// the flood still running.
	var committed int64
	testutil.Eventually(t, "the node commits batches during the flood", 20*time.Second, func() bool {
		s, err := sqlite.OpenReadOnly(context.Background(), filepath.Join(n.dir, "dialtrap.db"))
		if err != nil {
			return false
		}
		defer s.Close()
		committed, _ = s.CountEvents(context.Background())
		return committed >= 5000
	})
	if err := n.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-n.exited
	close(stop)

	s, err := sqlite.Open(context.Background(), filepath.Join(n.dir, "dialtrap.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, err := s.CountEvents(context.Background())
	s.Close()
	if err != nil || before == 0 {
		t.Fatalf("%d events survived the kill (%v): batches should have been committed during the flood", before, err)
	}
	if before < committed {
		t.Fatalf("%d events survived the kill, but %d were committed before it", before, committed)
	}
	// kill -9 during a write(2) can cut the batch being written: only the last line may be
	// partial, and the restart below removes it.
	lines := n.jsonLines()
	for i, line := range lines[:len(lines)-1] {
		if !wholeLine(line) {
			t.Fatalf("JSON line %d of %d is partial after kill -9: %.80q", i, len(lines), line)
		}
	}

	n.start() // same data directory
	if n.nodeID() != id {
		t.Errorf("node id changed across restart: %s then %s", id, n.nodeID())
	}
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", n.port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(strings.ReplaceAll(string(probe), "0046500729221", "31337"))); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// SIGTERM only once the node has taken the datagram in: its JSON log line is written.
	testutil.Eventually(t, "the node logs the probe sent after the restart", 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(n.dir, "dialtrap_json.log"))
		return strings.Contains(string(b), `"called_number":"31337"`)
	})
	n.stop()
	// After the restart every line is whole: the new lines did not land on a cut one.
	for i, line := range n.jsonLines() {
		if !wholeLine(line) {
			t.Fatalf("JSON line %d is partial after restart: %.80q", i, line)
		}
	}
	evs := n.events()
	if int64(len(evs)) < before+1 {
		t.Errorf("after restart: %d events, want more than %d", len(evs), before)
	}
	var found bool
	for _, e := range evs[before:] {
		if e.CalledNumber == "31337" {
			found = true
			if e.NodeID != id {
				t.Errorf("new event has node id %s, want %s", e.NodeID, id)
			}
		}
	}
	if !found {
		t.Error("the probe sent after the restart was not stored")
	}
}

// SIGTERM during a flood: what the node took in is all written before it exits, to the store
// and the JSON log alike.
func TestSIGTERMFlushesEverything(t *testing.T) {
	n := startNode(t, nodeOpts{})
	stop := make(chan struct{})
	sent, _ := flood(t, fmt.Sprintf("127.0.0.1:%d", n.port), probe, stop)
	// A fixed wait on purpose: the flood runs for a second, so that SIGTERM comes with a full
	// pipeline behind it. No single event marks that.
	time.Sleep(time.Second)
	n.stop() // SIGTERM while the flood still runs
	close(stop)
	evs := n.events()
	lines := n.jsonLines()
	if len(evs) == 0 || len(lines) != len(evs) {
		t.Fatalf("store has %d events, JSON log %d lines (sent %d)", len(evs), len(lines), sent.Load())
	}
	// The node's own totals: nothing dropped, everything delivered.
	re := regexp.MustCompile(`msg="sink totals" sink=(\w+) delivered=(\d+) dropped=(\d+)`)
	found := 0
	for _, m := range re.FindAllStringSubmatch(n.log(), -1) {
		found++
		if d, _ := strconv.Atoi(m[2]); d != len(evs) || m[3] != "0" {
			t.Errorf("sink %s delivered %s dropped %s; store holds %d", m[1], m[2], m[3], len(evs))
		}
	}
	if found != 2 {
		t.Errorf("found %d sink totals in the log:\n%s", found, n.log())
	}
	// Every message the listeners took in reached the store: the flood of one probe is
	// folded, and the events held in the fold window at SIGTERM are stored too.
	var probes int64
	for _, e := range evs {
		probes += e.Weight()
	}
	m := regexp.MustCompile(`msg="SIP capture totals" messages=(\d+)`).FindStringSubmatch(n.log())
	if m == nil || m[1] != strconv.FormatInt(probes, 10) {
		t.Errorf("capture total %v, store's events stand for %d probes", m, probes)
	}
	if len(evs) > 10 {
		t.Errorf("%d events stored for a second's flood of one probe, want it folded", len(evs))
	}
	t.Logf("sent %d, stored %d events standing for %d probes", sent.Load(), len(evs), probes)
}

// Start-up errors exit non-zero with a message that says what to do.
func TestStartupErrors(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tlsBusy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tlsBusy.Close()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	free := "127.0.0.1:0"
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"unknown flag", []string{"--frobnicate"}, nil, 2, "unknown flag"},
		{"secret without id", []string{"-c", "s3cret"}, nil, 2, "needs -i"},
		{"SIP port in use", []string{"--sip-addr", busy.LocalAddr().String()}, nil, 1, "--sip-addr"},
		{"TLS port in use", []string{"--sip-addr", free, "-z", tlsBusy.Addr().String()}, nil, 1, "--sip-tls-addr"},
		{"unreadable certificate", []string{"--sip-addr", free, "-t", "/nonexistent/cert.pem", "-k", "/nonexistent/key.pem"}, nil, 1, "check -t/-k"},
		{"garbage certificate", []string{"--sip-addr", free, "-t", garbage, "-k", garbage}, nil, 1, "check -t/-k"},
		{"bad env value", []string{"--sip-addr", free}, []string{"DIALTRAP_SIP_MAX_CONNS=lots"}, 2, "DIALTRAP_SIP_MAX_CONNS"},
		{"database is a directory", []string{"--sip-addr", free, "-f", dir}, nil, 1, "database"},
		{"postgres unreachable", []string{"--sip-addr", free, "--store", "postgres://dialtrap:s3cretPW@127.0.0.1:1/x"}, nil, 1, "connect to PostgreSQL at 127.0.0.1:1/x"},
		{"BGP without router id", []string{"--sip-addr", free, "--bgp-asn", "65000", "--bgp-neighbor", "127.0.0.2 as 65001"}, nil, 2, "--bgp-router-id"},
		{"BGP neighbour without AS", []string{"--sip-addr", free, "--bgp-asn", "65000", "--bgp-router-id", "127.0.0.1", "--bgp-neighbor", "127.0.0.2"}, nil, 2, "as ASN"},
		{"BGP TTL over a year", []string{"--sip-addr", free, "--bgp-ttl", "9000h"}, nil, 2, "--bgp-ttl"},
		{"policy deny status", []string{"--sip-addr", free, "--policy-addr", free, "--policy-deny", "500"}, nil, 2, "--policy-deny"},
		{"policy port in use", []string{"--sip-addr", free, "--policy-addr", busy.LocalAddr().String()}, nil, 1, "--policy-addr"},
	}
	for _, tt := range tests {
		// The error is printed once, at any log level: not by the log and again on exit.
		for _, verbose := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/verbose=%v", tt.name, verbose), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				args := append([]string{"--data-dir", t.TempDir(), "-z", "127.0.0.1:0"}, tt.args...)
				if verbose {
					args = append(args, "-v")
				}
				cmd := exec.CommandContext(ctx, binary, args...)
				cmd.Env = append(os.Environ(), tt.env...)
				out, err := cmd.CombinedOutput()
				code := cmd.ProcessState.ExitCode()
				if err == nil || code != tt.code || !strings.Contains(string(out), tt.want) {
					t.Errorf("exit %d (%v), want %d with %q:\n%s", code, err, tt.code, tt.want, out)
				}
				lines := 0
				for _, l := range strings.Split(string(out), "\n") {
					if strings.Contains(l, tt.want) {
						lines++
					}
				}
				if lines != 1 {
					t.Errorf("%d lines say %q, want one:\n%s", lines, tt.want, out)
				}
				if strings.Contains(string(out), "s3cretPW") {
					t.Errorf("a password was printed:\n%s", out)
				}
			})
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--sip-responsive") || !strings.Contains(string(out), "DIALTRAP_SIP_RESPONSIVE") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"-V"}, {"version"}} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil || !regexp.MustCompile(`^dialtrap \S+ \(commit \S+, go1\.\d+`).Match(out) {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
}

// Many silent connections from one address and a byte-a-second trickle from another do not
// stop the node from serving a real client; the trickle is cut off at the message timeout.
func TestSilentAndTrickleClients(t *testing.T) {
	need(t, "sipsak")
	n := startNode(t, nodeOpts{args: []string{"-r", "--sip-max-conns-per-ip", "16", "--sip-message-timeout", "2s"}})
	addr := fmt.Sprintf("127.0.0.1:%d", n.port)
	silent := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.8")}}
	var conns []net.Conn
	for range 200 {
		c, err := silent.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	trickler := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	tc, err := trickler.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	cutOff := make(chan error, 1)
	go func() {
		for _, b := range []byte("OPTIONS sip:trickle@x SIP/2.0\r\n") {
			if _, err := tc.Write([]byte{b}); err != nil {
				cutOff <- err
				return
			}
			time.Sleep(time.Second) // a fixed wait on purpose: the trickle sends a byte a second
		}
		cutOff <- nil
	}()
	// A real client over TCP, while both are at it: sipsak exits 0 only on a 200 OK.
	if out, err := run(t, 30*time.Second, "sipsak", "--transport=tcp", "-s", fmt.Sprintf("sip:4242@127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("node stopped serving others: %v\n%s", err, out)
	}
	// The server closes the trickling connection after 2 s; the next writes then fail.
	select {
	case err := <-cutOff:
		if err == nil {
			t.Error("a byte-a-second trickle was never cut off")
		}
	case <-time.After(20 * time.Second):
		t.Error("trickle still connected after 20 s")
	}
	n.stop()
	var served, trickled int
	for _, e := range n.events() {
		switch e.SourceIP {
		case "127.0.0.1":
			served++
		case "127.0.0.9":
			trickled++ // what it sent before the cut is kept
		case "127.0.0.8":
			t.Errorf("a silent connection produced an event: %q", e.SIPMessage)
		}
	}
	if served != 1 || trickled != 1 {
		t.Errorf("served %d, trickled %d: want 1 each", served, trickled)
	}
}

func wholeLine(line string) bool {
	return strings.HasPrefix(line, `{"app_name":"dialtrap"`) && strings.HasSuffix(line, "}") && json.Valid([]byte(line))
}

// Three nodes started at once on one fresh data directory: one runs, the other two say the
// directory is in use and exit 1; the data directory stays whole for the next start (it used
// to fail with "table events already exists", or leave a TLS key that did not match its
// certificate).
func TestConcurrentStartsOnOneDataDirectory(t *testing.T) {
	type proc struct {
		cmd    *exec.Cmd
		out    strings.Builder
		ready  string
		exited chan struct{}
	}
	for run := range 5 {
		dir := t.TempDir()
		procs := make([]*proc, 3)
		for i := range procs {
			p := &proc{ready: filepath.Join(t.TempDir(), "ready.json"), exited: make(chan struct{})}
			p.cmd = exec.Command(binary, "--data-dir", dir, "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0",
				"-a", "--api-addr", "127.0.0.1:0", "-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--ready-file", p.ready)
			p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
			if err := p.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { p.cmd.Wait(); close(p.exited) }()
			t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
			procs[i] = p
		}
		var running []*proc
		for _, p := range procs {
			if _, err := waitReady(p.ready, p.exited, 15*time.Second); err == nil {
				running = append(running, p)
				continue
			}
			<-p.exited
			if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.out.String(), "is in use by another dialtrap node") {
				t.Errorf("run %d: exit %d:\n%s", run, code, p.out.String())
			}
		}
		if len(running) != 1 {
			t.Fatalf("run %d: %d nodes run on one data directory, want 1", run, len(running))
		}
		running[0].cmd.Process.Signal(syscall.SIGTERM)
		<-running[0].exited
		// The next start finds everything whole.
		n := startNode(t, nodeOpts{dir: dir, args: []string{"-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0"}})
		n.stop()
	}
}
