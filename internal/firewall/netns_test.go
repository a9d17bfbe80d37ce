package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// netns is a network namespace of a test's own, deleted at its end.
type netns struct {
	name string
	f    *os.File
}

func (ns *netns) fd() int { return int(ns.f.Fd()) }

// newNetns creates a namespace dtfw-<random>, or skips the test where that is not allowed.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "dtfw-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run the tests as root): ip netns add %s: %v: %s",
			name, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	ns := &netns{name: name, f: f}
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// run runs a command inside the namespace and returns its output; it fails the test on error.
func (ns *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ns.try(args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// try runs a command inside the namespace.
func (ns *netns) try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(err.Error() + ": " + strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// needTool skips the test when a program it checks with is missing.
func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (apt package %s; scripts/test-deps.sh installs it)", name, pkg)
	}
}

// inside runs f on a thread switched into ns, so that sockets f opens belong to ns.
func (ns *netns) inside(t *testing.T, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(ns.fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, err) // the thread stays locked and ends with the goroutine
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// veth links two namespaces: a gets addr4a/addr6a, b gets addr4b/addr6b.
func veth(t *testing.T, a, b *netns, addr4a, addr4b, addr6a, addr6b string) {
	t.Helper()
	a.run(t, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b.name)
	a.run(t, "ip", "addr", "add", addr4a+"/24", "dev", "va")
	a.run(t, "ip", "addr", "add", addr6a+"/64", "dev", "va", "nodad")
	a.run(t, "ip", "link", "set", "va", "up")
	b.run(t, "ip", "addr", "add", addr4b+"/24", "dev", "vb")
	b.run(t, "ip", "addr", "add", addr6b+"/64", "dev", "vb", "nodad")
	b.run(t, "ip", "link", "set", "vb", "up")
}

// recvWithin reports whether c receives a datagram within d.
func recvWithin(c *net.UDPConn, d time.Duration) (string, bool) {
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}
