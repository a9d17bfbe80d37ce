package firewall

import (
	"net"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// netns is a network namespace of a test's own (testutil.Netns), deleted at its end.
type netns struct {
	*testutil.Netns
	name string
}

func (ns *netns) fd() int { return ns.FD() }

// newNetns creates a namespace dtfw-<random>, or skips the test where that is not allowed.
func newNetns(t *testing.T) *netns {
	t.Helper()
	ns := testutil.NewNetns(t, "fw")
	return &netns{Netns: ns, name: ns.Name}
}

// run runs a command inside the namespace and returns its output; it fails the test on error.
func (ns *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	return ns.Run(t, "", args...)
}

// try runs a command inside the namespace.
func (ns *netns) try(args ...string) (string, error) { return ns.Try("", args...) }

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
	if err := ns.Do(f); err != nil {
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
