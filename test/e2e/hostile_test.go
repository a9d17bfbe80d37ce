package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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

// Two scanners flood 64 KiB junk datagrams while the database is locked by another process:
// the store cannot write, its queue fills, and the queues' byte budget (here 32 MiB) must
// hold memory, not the count of events (this attack took the node to 3.7 GB before).
func TestJunkFloodWithLockedStoreStaysInBudget(t *testing.T) {
	const budget = 32 << 20
	n := startNode(t, nodeOpts{args: []string{"--queue-max-bytes", fmt.Sprint(budget)}})
	db, err := sql.Open("sqlite", "file:"+filepath.Join(n.dir, "dialtrap.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	junk := []byte(strings.Repeat("\x16junk", 64000/5))
	var sent atomic.Int64
	stop := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	for _, src := range []string{"127.0.0.30", "127.0.0.31"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: n.port})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for time.Now().Before(stop) {
				if _, err := c.Write(junk); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	hwm := n.peakRSS()
	conn.ExecContext(context.Background(), "ROLLBACK")
	t.Logf("sent %d datagrams of 64 KiB (%d MiB); node peak RSS %d MiB with a %d MiB queue budget",
		sent.Load(), sent.Load()*int64(len(junk))>>20, hwm>>20, budget>>20)
	// The budget, the Go heap's room to collect it (about as much again), and the node's
	// own working set.
	if limit := int64(2*budget + 96<<20); hwm > limit {
		t.Errorf("peak RSS %d MiB, over %d MiB", hwm>>20, limit>>20)
	}
}
