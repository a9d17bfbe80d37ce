package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for _, c := range []struct {
		n    int
		want time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{7, 6400 * time.Millisecond},
		{8, 10 * time.Second},
		{63, 10 * time.Second},
		{1 << 30, 10 * time.Second},
	} {
		if got := p.Delay(c.n); got != c.want {
			t.Errorf("Delay(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	if d := (Policy{}).Delay(3); d != 0 {
		t.Errorf("zero policy waits %v", d)
	}
	if d := (Policy{Min: time.Second}).Delay(5); d != time.Second {
		t.Errorf("Max below Min: %v, want Min", d)
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	p := Policy{Min: time.Second, Max: time.Minute, Jitter: true}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(3) // step 4 s
		if d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("jittered delay %v outside [2s, 4s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 1000: no jitter", len(seen))
	}
}
