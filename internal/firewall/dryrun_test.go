package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDryRun(t *testing.T) {
	var out strings.Builder
	s := NewDryRun(&out)
	d := s.(*dryRun)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	d.now = func() time.Time { return now }
	ctx := context.Background()

	ensure(t, s)
	add(t, s,
		el("192.0.2.1", time.Hour),
		el("2001:db8::1", 0),
		el("::ffff:192.0.2.2", 1500*time.Millisecond),
		el("192.0.2.3", 10*time.Second),
		el("192.0.2.3", 20*time.Second), // the last counts
	)
	if err := s.Delete(ctx, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")}); err != nil {
		t.Fatal(err)
	}
	checkLen(t, s, 2, 1)
	now = now.Add(2 * time.Second) // 192.0.2.2 expires
	checkLen(t, s, 1, 1)
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	want := `ensure
add 192.0.2.1 timeout 3600s
add 192.0.2.2 timeout 1500ms
add 192.0.2.3 timeout 20s
add 2001:db8::1
del 192.0.2.1
del 198.51.100.1
remove
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	checkLen(t, s, 0, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, []Element{el("192.0.2.1", 0)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}
