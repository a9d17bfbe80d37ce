package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// DHTNode is Debian's OpenDHT command-line node (package dhtnode), driven through its
// prompt: the OpenDHT bridge's tests talk to the real thing.
type DHTNode struct {
	t    *testing.T
	Port int
	in   io.WriteCloser
	mu   sync.Mutex
	out  strings.Builder
}

// StartDHTNode runs dhtnode on a free UDP port on loopback, joined through bootstrap when
// given (host:port), and stops it when the test ends.
func StartDHTNode(t *testing.T, bootstrap string) *DHTNode {
	t.Helper()
	if _, err := exec.LookPath("dhtnode"); err != nil {
		t.Fatal("dhtnode is missing: run scripts/test-deps.sh (Debian package dhtnode)")
	}
	port := FreePort(t, "127.0.0.1")
	args := []string{"-p", fmt.Sprint(port)}
	if bootstrap != "" {
		args = append(args, "-b", bootstrap)
	}
	cmd := exec.Command("dhtnode", args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	cmd.Stdout, cmd.Stderr = outW, outW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &DHTNode{t: t, Port: port, in: in}
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			n.mu.Lock()
			n.out.WriteString(sc.Text() + "\n")
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		outW.Close()
	})
	n.WaitOutput("running on port", 10*time.Second)
	return n
}

func (n *DHTNode) Command(line string) {
	n.t.Helper()
	if _, err := io.WriteString(n.in, line+"\n"); err != nil {
		n.t.Fatal(err)
	}
}

func (n *DHTNode) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.String()
}

func (n *DHTNode) WaitOutput(s string, d time.Duration) {
	n.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(n.Output(), s) {
			return
		}
	}
	n.t.Fatalf("dhtnode did not print %q:\n%s", s, n.Output())
}
