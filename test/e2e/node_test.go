// Package e2e runs the built dialtrap binary on loopback ports and attacks it with the real
// scanner tools (SIPp, sipvicious, sipsak). It talks only to 127.0.0.0/8 and ::1.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

var binary string // the dialtrap binary built once for all tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dialtrap-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dialtrap")
	// Built as make build and the packages build it (static, -trimpath): the tests run what
	// ships, and the package test's build reuses this one's compiled packages.
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", binary, "../../cmd/dialtrap")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build dialtrap: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Wrap(m).Run() // the fleet tests' PostgreSQL server stops at the end
	os.RemoveAll(dir)
	os.Exit(code)
}

// need fails the test when a tool the suite depends on is missing: the test command installs
// them (scripts/test-deps.sh), so a missing one is a broken setup, not a reason to skip.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh (make test does)", tool)
		}
	}
}

// node is one running dialtrap process. It listens on port 0 and says where in its
// --ready-file: no port is probed and released, so none can be taken in between.
type node struct {
	t       *testing.T
	dir     string
	port    int    // SIP UDP and TCP
	tlsPort int    // SIP TLS
	apiAddr string // with -a: host:port of the REST API
	p2p     []string
	args    []string
	netns   string // run inside this network namespace
	ready   string // the --ready-file
	cmd     *exec.Cmd
	syslog  *testutil.SyslogReceiver

	mu     sync.Mutex
	stderr []string
	exited chan struct{}
}

type nodeOpts struct {
	args   []string // extra flags
	syslog bool
	dir    string // reuse a data directory (restart tests)
	netns  string // run inside this network namespace (firewall tests)
}

func startNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	n := &node{t: t, dir: o.dir, netns: o.netns, ready: filepath.Join(t.TempDir(), "ready.json")}
	if n.dir == "" {
		n.dir = t.TempDir()
	}
	n.args = append([]string{"-v", "-j", "--data-dir", n.dir, "--sip-addr", ":0", "-z", ":0",
		"--api-addr", "127.0.0.1:0", "--ready-file", n.ready}, o.args...)
	if o.syslog {
		n.syslog = testutil.NewSyslogReceiver(t)
		n.args = append(n.args, "-s", "--syslog-addr", "unix://"+n.syslog.Path)
	}
	n.start()
	return n
}

// start runs the node (again, on a restart: the ports change) and waits for its ready file.
func (n *node) start() {
	t := n.t
	t.Helper()
	os.Remove(n.ready) // a kill -9 leaves the last run's behind
	n.exited = make(chan struct{})
	n.cmd = exec.Command(binary, n.args...)
	if n.netns != "" {
		// ip netns exec enters the namespace and execs the binary: the PID is the node's.
		n.cmd = exec.Command("ip", append([]string{"netns", "exec", n.netns, binary}, n.args...)...)
	}
	n.cmd.Dir = n.dir
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			n.mu.Lock()
			n.stderr = append(n.stderr, sc.Text())
			n.mu.Unlock()
		}
		n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() { n.kill() })
	addrs, err := waitReady(n.ready, n.exited, 15*time.Second)
	if err != nil {
		t.Fatalf("dialtrap: %v:\n%s", err, n.log())
	}
	n.port, n.tlsPort = portOf(addrs.SIPUDP), portOf(addrs.SIPTLS)
	n.apiAddr, n.p2p = addrs.API, addrs.P2P
}

// readyAddrs is the --ready-file of a node.
type readyAddrs struct {
	SIPUDP string   `json:"sip_udp"`
	SIPTCP string   `json:"sip_tcp"`
	SIPTLS string   `json:"sip_tls"`
	API    string   `json:"api"`
	PeerID string   `json:"peer_id"`
	P2P    []string `json:"p2p"`
}

// waitReady waits until a node writes its ready file, exits, or the time is up.
func waitReady(path string, exited <-chan struct{}, within time.Duration) (readyAddrs, error) {
	deadline := time.After(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			var a readyAddrs
			if err := json.Unmarshal(b, &a); err != nil {
				return a, fmt.Errorf("ready file %s: %v", path, err)
			}
			return a, nil
		}
		select {
		case <-exited:
			return readyAddrs{}, errors.New("exited at start")
		case <-deadline:
			return readyAddrs{}, fmt.Errorf("not ready after %v", within)
		case <-tick.C:
		}
	}
}

func portOf(hostport string) int {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return 0
	}
	return int(ap.Port())
}

func (n *node) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.stderr, "\n")
}

// stop sends SIGTERM and waits: the node must flush everything and exit 0.
func (n *node) stop() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatal(err)
	}
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		n.t.Fatalf("dialtrap did not exit on SIGTERM:\n%s", n.log())
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		n.t.Fatalf("dialtrap exited %d after SIGTERM:\n%s", code, n.log())
	}
}

func (n *node) kill() {
	if n.cmd.ProcessState == nil {
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// events reads every stored event (after stop) through the store package.
func (n *node) events() []*event.Event {
	n.t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(n.dir, "dialtrap.db"))
	if err != nil {
		n.t.Fatal(err)
	}
	defer s.Close()
	var out []*event.Event
	if err := s.Events(context.Background(), func(e *event.Event) error { out = append(out, e); return nil }); err != nil {
		n.t.Fatal(err)
	}
	return out
}

// jsonLines returns the JSON log's lines.
func (n *node) jsonLines() []string {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "dialtrap_json.log"))
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (n *node) nodeID() string {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, event.NodeIDFile))
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// run executes a tool with a deadline and returns its combined output.
func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir() // SIPp and sipvicious write trace and session files
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// peakRSS is the node's peak resident memory (VmHWM), in bytes.
func (n *node) peakRSS() int64 {
	n.t.Helper()
	kb := testutil.ProcStatusKiB(n.cmd.Process.Pid, "VmHWM:")
	if kb == 0 {
		n.t.Fatalf("no VmHWM for the node (pid %d)", n.cmd.Process.Pid)
	}
	return kb << 10
}
