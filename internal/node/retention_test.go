package node

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// With --retention a node deletes the events older than that at start and every round after,
// in chunks, and says so; the lookups still count every sighting. A round's clock is the
// node's: the second round here is asked for by hand with a later time.
func TestRetention(t *testing.T) {
	defer func(c int) { retentionChunk = c }(retentionChunk)
	retentionChunk = 7 // several chunks a round
	cfg := load(t, "-R", "-a", "--retention", "1d")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "dialtrap.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var batch []*event.Event
	for i, age := range []time.Duration{30 * 24 * time.Hour, 3 * 24 * time.Hour, 25 * time.Hour, 23 * time.Hour, time.Hour} {
		for j := range 10 {
			batch = append(batch, &event.Event{AppName: event.AppName, AppVersion: "t", Timestamp: event.FormatTime(now.Add(-age).Add(time.Duration(j) * time.Second)),
				UUID: uuid.Must(uuid.NewV7()).String(), NodeID: "n", CollectedMethod: event.Passive, Transport: event.UDP,
				SourceIP: "198.51.100.9", CalledNumber: fmt.Sprint(100 + i), SIPMethod: "OPTIONS", SIPMessage: "OPTIONS"})
		}
	}
	if err := st.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	st.Close()

	n, logs := startNode(t, cfg)
	count := func() int64 {
		ro, err := sqlite.OpenReadOnly(ctx, filepath.Join(cfg.DataDir, "dialtrap.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		c, err := ro.CountEvents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The round's line is logged after its last delete commits: wait for both.
	done := func() bool { return count() == 20 && strings.Contains(logs.String(), "deleted=30") }
	for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d events 10 s after start, want the 20 of the last day\n%s", count(), logs)
		}
	}
	if !strings.Contains(logs.String(), "retention: deleted old events") || !strings.Contains(logs.String(), "deleted=30") {
		t.Errorf("no line for the round:\n%s", logs)
	}
	l, err := apiClient(n).IP(ctx, "198.51.100.9")
	if err != nil || !l.Known || l.SeenCount != 50 {
		t.Errorf("lookup after retention: %+v %v, want all 50 sightings counted", l, err)
	}
	// A day later the events of 23 h and 1 h ago are old too.
	n.pruneOnce(ctx, now.Add(24*time.Hour))
	if c := count(); c != 0 {
		t.Errorf("%d events after the next day's round, want 0", c)
	}
}
