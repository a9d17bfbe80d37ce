package node

import (
	"context"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Retention's rhythm: a round at start and then every retentionInterval deletes the events
// older than --retention, retentionChunk at a time, with a pause between chunks so that the
// store's writer and readers have the database most of the time.
var (
	retentionInterval = time.Minute
	retentionChunk    = 5000
	retentionPause    = 50 * time.Millisecond
)

// startRetention runs the retention rounds until the node closes.
func (n *Node) startRetention() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(retentionInterval)
		defer t.Stop()
		for {
			n.pruneOnce(ctx, time.Now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	n.onClose("retention", 5*time.Second, func(ctx context.Context) error {
		cancel()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// pruneOnce deletes every event stamped before now less --retention, and logs how many.
func (n *Node) pruneOnce(ctx context.Context, now time.Time) {
	cutoff := event.FormatTime(now.Add(-n.cfg.Retention))
	var total int64
	for ctx.Err() == nil {
		got, err := n.store.PruneEvents(ctx, cutoff, retentionChunk)
		total += got
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("retention: old events could not be deleted; the next round tries again", "err", err)
			}
			break
		}
		if got < int64(retentionChunk) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(retentionPause):
		}
	}
	if total > 0 {
		n.log.Info("retention: deleted old events; their counts stay", "deleted", total, "before", cutoff)
	}
}
