package feed

import (
	"context"
	"testing"
)

// gatedSource answers each ChangeSeq with the next value sent on answers, after the read has
// begun (began): a store read that is under way while streams come and go.
type gatedSource struct {
	StreamSource
	began   chan struct{}
	answers chan [2]int64
}

func (g *gatedSource) ChangeSeq(ctx context.Context) (int64, int64, error) {
	select {
	case g.began <- struct{}{}:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	select {
	case a := <-g.answers:
		return a[0], a[1], nil
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// The last stream's end resets the watcher to "not read yet" (epoch 0). A poll that was
// under way then must not put back what it read: that read is stale for the next stream,
// which would take it for the current sequence (here: another epoch, so Serve would end
// the new stream with ErrEpoch before the watcher reads again).
func TestWatcherPollUnderWayAtLastStreamEndLeavesNoStaleRead(t *testing.T) {
	src := &gatedSource{StreamSource: fixture(t), began: make(chan struct{}), answers: make(chan [2]int64)}
	w := NewWatcher(src, 1)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); w.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	done := w.Watch()
	<-src.began // the watcher's poll is under way
	done()      // the last stream ends: reset to epoch 0
	src.answers <- [2]int64{1, 5}

	// The next stream comes; the watcher's fresh read has begun but not answered.
	done2 := w.Watch()
	defer done2()
	<-src.began
	if e, s, _, _ := w.Current(); e != 0 {
		t.Errorf("a new stream reads epoch %d seq %d, read while no stream watched; want 0 (not read yet)", e, s)
	}
	src.answers <- [2]int64{2, 1}
}
