package hub

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Publishers at mixed rates (bursts, gaps near the linger) lose no event and leave none
// queued: every event is written within a few lingers of the last publish.
func TestLingerStressLosesNothing(t *testing.T) {
	const linger = time.Millisecond
	h := New(nil)
	b := &batches{}
	h.Add(b, Options{MaxBatch: 7, Capacity: 1 << 14, Policy: Block, Linger: linger})
	h.Start(context.Background())
	const pubs, each = 8, 400
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(p), 1))
			for _, e := range events(each) {
				h.Publish(e)
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(2500)) * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for sum(b.get()) < pubs*each && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sum(b.get()); got != pubs*each {
		t.Errorf("%d of %d events written 5 s after the last publish (no close)", got, pubs*each)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Error(err)
	}
}
