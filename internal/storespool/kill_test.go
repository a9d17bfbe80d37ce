package storespool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// killedWriterEnv makes the test binary a writer that spools into the directory it names
// until it is killed (TestKilledMidWrite).
const killedWriterEnv = "DIALTRAP_TEST_STORESPOOL_WRITER"

// seqEvents are events numbered from from, their number in the event_uuid.
func seqEvents(from, n int, msg string) []*event.Event {
	events := makeEvents(n)
	for i, e := range events {
		e.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", from+i)
		e.SIPMessage = msg
	}
	return events
}

func seqOf(uuid string) int {
	n, _ := strconv.Atoi(uuid[len(uuid)-12:])
	return n
}

// killedWriter spools batches of large events for a store that is always down, and prints
// how many events were accepted after each Write returned, until it is killed.
func killedWriter() {
	db := newStore()
	db.down = true
	s, err := New(db, Config{Dir: os.Getenv(killedWriterEnv), MaxBytes: 1 << 40})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	msg := strings.Repeat("x", 12<<10) // 500 events: a 6 MB write(2)
	for n := 0; ; n += 500 {
		if err := s.Write(context.Background(), seqEvents(n, 500, msg)); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("accepted", n+500)
	}
}

// A writer killed with SIGKILL, at a random moment of its appends, leaves a spool that opens
// again (the lock dies with the process), holds every event whose Write returned, and
// replays a gapless run from the first event on, each once and in order; a record torn by
// the kill is cut and counted.
func TestKilledMidWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store-spool")
	torn := uint64(0)
	next := 0 // events of earlier rounds, all replayed
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killedWriterEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		accepted := 0
		for accepted < 3000 && lines.Scan() {
			if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "accepted" {
				accepted, _ = strconv.Atoi(f[1])
			} else {
				t.Fatalf("writer: %s", lines.Text())
			}
		}
		time.Sleep(time.Duration(rand.IntN(100_000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		for lines.Scan() { // what it printed before it died
			if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "accepted" {
				accepted, _ = strconv.Atoi(f[1])
			}
		}
		cmd.Wait()

		db := newStore()
		s, err := New(db, Config{Dir: dir, MaxBytes: 1 << 40})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		s.Start(context.Background())
		waitCaughtUp(t, s)
		st := s.Stats()
		s.Close(context.Background())
		torn += st.Torn
		if st.Corrupt != 0 {
			t.Errorf("round %d: %d corrupt records", round, st.Corrupt)
		}
		db.mu.Lock()
		for i, u := range db.order {
			if seqOf(u) != i || db.writes[u] != 1 {
				t.Fatalf("round %d: event %d of the replay is number %d, written %d times", round, i, seqOf(u), db.writes[u])
			}
		}
		n := len(db.order)
		db.mu.Unlock()
		if n < accepted {
			t.Fatalf("round %d: %d events replayed, but %d were accepted before the kill", round, n, accepted)
		}
		t.Logf("round %d: %d accepted, %d replayed, torn %d", round, accepted, n, st.Torn)
		next += n
	}
	t.Logf("%d events over 5 kills, %d torn records cut", next, torn)
}
