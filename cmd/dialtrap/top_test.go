package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSparkline(t *testing.T) {
	for _, tt := range []struct {
		counts []int64
		want   string
	}{
		{[]int64{0, 1, 2, 4, 8}, " ▁▂▄█"},
		{[]int64{0, 0}, "  "},
		{[]int64{-5, 3, math.MaxInt64}, " ▁█"}, // from a broken or hostile API: no panic
		{[]int64{math.MaxInt64, math.MaxInt64 / 2}, "█▄"},
	} {
		if got := sparkline(tt.counts); got != tt.want {
			t.Errorf("sparkline(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

// Whatever the API answers, top writes no control characters: a value cannot retitle the
// terminal or clear it.
func TestTopPrintsNoEscapes(t *testing.T) {
	evil := "\x1b]0;pwned\a\x1b[2J\x1b[31mEVIL\x1b[0m"
	s := snapshot{
		since: evil, events: 3, timeline: []int64{1, -2, 3},
		tools:    [][3]string{{evil, evil, evil}},
		origins:  []valueCount{{evil, evil}},
		prefixes: []valueCount{{evil, evil}},
		targets:  [][5]string{{evil, evil, evil, evil, "fresh"}},
		camps:    [][5]string{{evil, evil, evil, evil, evil}},
	}
	var b strings.Builder
	s.print(&b, time.Now())
	if strings.ContainsAny(b.String(), "\x1b\a") {
		t.Errorf("control characters in the output:\n%q", b.String())
	}
	if !strings.Contains(b.String(), "?]0;pwned") {
		t.Errorf("the value itself is gone:\n%s", b.String())
	}
}
