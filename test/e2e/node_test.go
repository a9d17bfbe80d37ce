// Package e2e runs the built dialtrap binary on loopback ports and attacks it with the real
// scanner tools (SIPp, sipvicious, sipsak). It talks only to 127.0.0.0/8 and ::1.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
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
)

var binary string // the dialtrap binary built once for all tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dialtrap-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dialtrap")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/dialtrap").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build dialtrap: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
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

// freePort returns a port free on both UDP and TCP on all addresses.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// node is one running dialtrap process.
type node struct {
	t       *testing.T
	dir     string
	port    int // SIP UDP and TCP
	tlsPort int
	args    []string
	cmd     *exec.Cmd
	syslog  *syslogReceiver

	mu     sync.Mutex
	stderr []string
	ready  chan struct{}
	exited chan struct{}
}

type nodeOpts struct {
	args   []string // extra flags
	syslog bool
	dir    string // reuse a data directory (restart tests)
}

func startNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	n := &node{t: t, dir: o.dir, port: freePort(t), tlsPort: freePort(t)}
	if n.dir == "" {
		n.dir = t.TempDir()
	}
	n.args = append([]string{"-v", "-j", "--data-dir", n.dir,
		"--sip-addr", fmt.Sprintf(":%d", n.port), "-z", fmt.Sprintf(":%d", n.tlsPort)}, o.args...)
	if o.syslog {
		n.syslog = newSyslogReceiver(t)
		n.args = append(n.args, "-s", "--syslog-addr", "unix://"+n.syslog.path)
	}
	n.start()
	return n
}

func (n *node) start() {
	t := n.t
	t.Helper()
	n.ready, n.exited = make(chan struct{}), make(chan struct{})
	n.cmd = exec.Command(binary, n.args...)
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
			line := sc.Text()
			n.mu.Lock()
			n.stderr = append(n.stderr, line)
			n.mu.Unlock()
			if strings.Contains(line, `msg="dialtrap running"`) {
				close(n.ready)
			}
		}
		n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() { n.kill() })
	select {
	case <-n.ready:
	case <-n.exited:
		t.Fatalf("dialtrap exited at start:\n%s", n.log())
	case <-time.After(15 * time.Second):
		t.Fatalf("dialtrap not ready after 15 s:\n%s", n.log())
	}
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

// syslogReceiver is a unix datagram socket standing in for /dev/log.
type syslogReceiver struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func newSyslogReceiver(t *testing.T) *syslogReceiver {
	t.Helper()
	// Unix socket paths are limited to about 100 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "dtsl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &syslogReceiver{path: filepath.Join(dir, "log.sock")}
	r.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: r.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.conn.SetReadBuffer(8 << 20)
	t.Cleanup(func() { r.conn.Close() })
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := r.conn.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, string(buf[:n]))
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *syslogReceiver) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}
