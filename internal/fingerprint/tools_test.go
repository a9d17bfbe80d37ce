package fingerprint

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// captureLive runs a real tool against a UDP socket of the test's and returns the first
// request it sent (the tool is stopped once it has one: nothing answers it).
func captureLive(t *testing.T, name string, args func(port int) []string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed (scripts/test-deps.sh installs it): %v", name, err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args(port)...)
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, _, err := pc.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("%s sent nothing: %v", name, err)
	}
	return buf[:n]
}

// The tools run in the test, their first request identified by shape, with and without a
// User-Agent that lies.
func TestLiveTools(t *testing.T) {
	for _, tc := range []struct {
		name, tool string
		args       func(port int) []string
	}{
		{"svmap", SIPVicious, func(p int) []string {
			return []string{"-p" + strconv.Itoa(p), "-P", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")), "127.0.0.1"}
		}},
		{"svwar", SIPVicious, func(p int) []string {
			return []string{"-p" + strconv.Itoa(p), "-P", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")), "-e100-101", "127.0.0.1"}
		}},
		{"svcrack", SIPVicious, func(p int) []string {
			return []string{"-p" + strconv.Itoa(p), "-P", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")), "-u100", "-r1-2", "127.0.0.1"}
		}},
		{"sipsak", SIPSak, func(p int) []string { return []string{"-s", fmt.Sprintf("sip:100@127.0.0.1:%d", p)} }},
		{"sipp", SIPp, func(p int) []string {
			return []string{"-sn", "uac", "-m", "1", "-nostdin", "-p", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")), "-s", "0046812118532", fmt.Sprintf("127.0.0.1:%d", p)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := captureLive(t, tc.name, tc.args)
			m := sip.Parse(raw)
			if got := Identify(&m, raw); got.Tool != tc.tool || !got.ByShape || got.UASpoofed {
				t.Errorf("%+v, want %s by shape, not spoofed:\n%s", got, tc.tool, raw)
			}
			lie := setUA(raw, "Cisco-SIPGateway/IOS-12.x")
			m = sip.Parse(lie)
			if got := Identify(&m, lie); got.Tool != tc.tool || !got.UASpoofed {
				t.Errorf("with a lying User-Agent: %+v, want %s, spoofed", got, tc.tool)
			}
		})
	}
}
