package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// A probe whose 64 KiB User-Agent makes a syslog line longer than a UDP message used to be
// refused by the kernel ("message too long"), retried forever, and syslog went blind: no
// later probe reached it, so Fail2Ban banned no one. Now its line is cut to fit, and every
// probe after it is logged.
func TestHugeUserAgentDoesNotSilenceSyslog(t *testing.T) {
	rcv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	n := startNode(t, nodeOpts{args: []string{"-s", "--syslog-addr", "udp://" + rcv.LocalAddr().String()}})
	huge := "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nUser-Agent: " + strings.Repeat("A", 64000) + "\r\n\r\n"
	sendUDP(t, "127.0.0.20", huge, n.port)
	for i := range 5 {
		sendUDP(t, fmt.Sprintf("127.0.0.%d", 21+i), "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nUser-Agent: sipsak\r\n\r\n", n.port)
	}
	got := map[string]int{} // source IP -> message size
	buf := make([]byte, 70<<10)
	testutil.Eventually(t, "every probe's syslog line arrives", 10*time.Second, func() bool {
		rcv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		m, _, err := rcv.ReadFrom(buf)
		if err == nil {
			line := string(buf[:m])
			if i := strings.Index(line, "Source IP: "); i >= 0 {
				ip, _, _ := strings.Cut(line[i+len("Source IP: "):], ",")
				got[ip] = m
			}
		}
		return len(got) == 6
	})
	if size := got["127.0.0.20"]; size > 1024 {
		t.Errorf("the huge probe's message is %d bytes, more than a UDP syslog message's 1,024", size)
	}
}
