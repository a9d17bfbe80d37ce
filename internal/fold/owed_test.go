package fold

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// The owed counter balances: after concurrent probes, rolls, ends, held groups and Close,
// no group owes anything, and owed is 0 (a negative count would keep the short tick off).
func TestOwedBalances(t *testing.T) {
	var busy sync.Mutex
	flip := false
	s := &sink{}
	f := New(Config{Window: 2 * time.Millisecond, Publish: s.publish, Busy: func() bool {
		busy.Lock()
		defer busy.Unlock()
		flip = !flip
		return flip
	}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				add(f, probe(fmt.Sprintf("198.51.100.%d", i%7), fmt.Sprint(g, i%5)))
				if i%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	f.Close()
	if n := f.owed.n.Load(); n != 0 {
		t.Errorf("owed %d after Close, want 0", n)
	}
	if w, st := weights(s.take()), f.Stats(); w != int64(st.Probes) || st.Probes != 4*3000 {
		t.Errorf("events stand for %d probes, %d counted, want %d", w, st.Probes, 4*3000)
	}
}
