package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestEachMessageHasItsOwnInterval(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	for range 100 {
		l.Warn("SIP connection refused: limit reached", "from", "192.0.2.1")
	}
	// A different failure in the middle of the flood is not hidden by it.
	l.Warn("SIP accept failed", "err", "too many open files")
	now = now.Add(5 * time.Second)
	l.Warn("SIP connection refused: limit reached")
	now = now.Add(6 * time.Second)
	l.Warn("SIP connection refused: limit reached")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[1], "SIP accept failed") {
		t.Errorf("accept error hidden by the refusal flood: %q", lines[1])
	}
	if !strings.Contains(lines[2], "suppressed=100") {
		t.Errorf("third line %q does not count the 100 held back", lines[2])
	}
}

func TestResetLetsTheNextThrough(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	l.Warn("webhook: delivery failed")
	l.Warn("webhook: delivery failed")
	l.Reset("webhook: delivery failed")
	l.Warn("webhook: delivery failed")
	if n := strings.Count(buf.String(), "delivery failed"); n != 2 {
		t.Errorf("%d lines, want 2 (the first and the one after Reset)", n)
	}
}

func TestDisabledLevelCostsNothing(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})), time.Hour)
	l.Warn("quiet")
	l.Error("loud")
	if strings.Contains(buf.String(), "quiet") || !strings.Contains(buf.String(), "loud") {
		t.Errorf("levels not honoured: %q", buf.String())
	}
	if len(l.keys) != 1 {
		t.Errorf("a disabled message took a slot: %d keys", len(l.keys))
	}
}

func TestKeyTableIsBounded(t *testing.T) {
	l := New(slog.New(slog.DiscardHandler), time.Hour)
	l.log = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for i := range 10 * maxKeys {
		l.Warn(strings.Repeat("x", i%500) + string(rune('a'+i%26)))
	}
	if len(l.keys) > maxKeys {
		t.Errorf("%d keys, more than %d", len(l.keys), maxKeys)
	}
}
