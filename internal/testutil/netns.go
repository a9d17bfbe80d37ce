package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace of a test's own (named dt<prefix>-<random>), deleted when the
// test ends: firewall tests change its rules, never the host's.
type Netns struct {
	Name string
	File *os.File // /run/netns/<Name>, for netlink clients that take a namespace fd
}

// FD is the namespace's file descriptor.
func (ns *Netns) FD() int { return int(ns.File.Fd()) }

// NewNetns creates a namespace with its loopback up, or skips the test, saying why, where
// namespaces cannot be made (no CAP_NET_ADMIN, no iproute2).
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed: scripts/test-deps.sh installs it")
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "dt" + prefix + "-" + hex.EncodeToString(b[:])
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
	ns := &Netns{Name: name, File: f}
	ns.Run(t, "", "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace with stdin and returns its output; it fails the
// test on error.
func (ns *Netns) Run(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := ns.Try(stdin, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// Try runs a command inside the namespace.
func (ns *Netns) Try(stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(err.Error() + ": " + strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Cmd is a command to start inside the namespace.
func (ns *Netns) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Do runs f on an OS thread moved into the namespace: the sockets f opens live there, and
// stay there when the thread moves back. A thread that cannot move back is not reused.
func (ns *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(ns.FD(), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err) // still locked: the thread ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from inside the namespace.
func (ns *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient makes its requests from inside the namespace (e.g. to a node's API on the
// namespace's loopback).
func (ns *Netns) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
}
