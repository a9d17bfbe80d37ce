package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtrap/dialtrap/internal/fold"
	"github.com/dialtrap/dialtrap/internal/hub"
)

// Sources are the counters other parts keep themselves, read at scrape time. A nil function
// leaves its metrics out (that part is off on this node).
type Sources struct {
	Sinks             func() []hub.Stats // the hub's per-sink counters
	KernelDrops       func() uint64      // UDP datagrams the kernel dropped before capture read them
	RepliesOverBudget func() uint64      // responsive-mode replies withheld by the per-source budget
	Peers             func() Peers       // -p
	StoreSpool        func() StoreSpool  // a PostgreSQL store's disk spool
	Webhook           func() Webhook     // -w
	Fold              func() fold.Stats  // --fold-window
	Hits              func() Hits        // -a or --policy-addr
}

// Hits is what the hit recorder reports.
type Hits struct {
	Hits, Dropped, Alerts uint64
	Notifiers             []HitNotifier
}

// HitNotifier counts one alert notifier's deliveries.
type HitNotifier struct {
	Name         string // alert-webhook, alert-slack, alert-syslog
	Sent, Failed uint64
}

// Peers is what the peer-to-peer node reports (its /peers counters).
type Peers struct {
	Connected      int
	Published      uint64
	Received       uint64
	Rejected       map[string]uint64 // by reason (peer.Reason*)
	Dropped        map[string]uint64 // gossipsub messages without room, by queue
	Pending        int               // held by the trust gate
	PendingDropped uint64
}

// Webhook is what the webhook sink reports.
type Webhook struct {
	SpoolEvents int64
	SpoolBytes  int64
	Delivered   uint64
	Rejected    uint64
	Failures    uint64
	Dropped     uint64
}

// StoreSpool is what the disk spool of a store that can go away (PostgreSQL) reports
// (storespool.Stats).
type StoreSpool struct {
	Spooling     bool // writes go to the spool now
	Events       int64
	Bytes        int64
	Spooled      uint64
	Replayed     uint64
	FullRefusals uint64
	Refused      uint64
	Corrupt      uint64
	Torn         uint64
	Failures     uint64
}

// peerReasons and dropQueues bound the reason and queue labels of the peer metrics: the peer
// node sets them from its own constants, and anything else would count as "other".
var (
	peerReasons = []string{"size", "signature", "schema", "timestamp", "ip", "number", "rate", "own", "duplicate", "conflict"}
	dropQueues  = []string{"outbound", "validation", "delivery"}
)

// Watch registers a collector that reads s at every scrape. Call it once, when the parts it
// reads exist.
func (m *Metrics) Watch(s Sources) {
	m.reg.MustRegister(newCollector(s))
}

type collector struct {
	s     Sources
	descs []*prometheus.Desc

	queueEvents, queueBytes, delivered, dropped, refused, writeErrors *prometheus.Desc
	kernelDrops, overBudget                                           *prometheus.Desc
	peers, peerPublished, peerReceived, peerRejected, peerDropped     *prometheus.Desc
	peerPending, peerPendingDropped                                   *prometheus.Desc
	ssSpooling, ssEvents, ssBytes, ssSpooled, ssReplayed, ssFull      *prometheus.Desc
	ssRefused, ssCorrupt, ssTorn, ssFailures                          *prometheus.Desc
	spoolEvents, spoolBytes, whDelivered, whRejected, whFailures      *prometheus.Desc
	whDropped                                                         *prometheus.Desc
	folded, foldEvents, foldHeld, unfolded, foldGroups, foldBytes     *prometheus.Desc
	hits, hitsDropped, alerts, notified, notifyFailed                 *prometheus.Desc
}

func newCollector(s Sources) *collector {
	c := &collector{s: s}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		desc := prometheus.NewDesc(name, help, labels, nil)
		c.descs = append(c.descs, desc)
		return desc
	}
	if s.Sinks != nil {
		c.queueEvents = d("dialtrap_sink_queue_events", "Events waiting in the sink's queue.", "sink")
		c.queueBytes = d("dialtrap_sink_queue_bytes", "Bytes the events waiting in the sink's queue hold.", "sink")
		c.delivered = d("dialtrap_sink_events_delivered_total", "Events the sink wrote.", "sink")
		c.dropped = d("dialtrap_sink_events_dropped_total", "Events discarded before the sink wrote them: its queue was full, or it still failed at shutdown.", "sink")
		c.refused = d("dialtrap_sink_events_refused_total", "Events the sink can never write (too large, impossible to encode), skipped.", "sink")
		c.writeErrors = d("dialtrap_sink_write_errors_total", "Failed writes of a batch to the sink (each is retried).", "sink")
	}
	if s.KernelDrops != nil {
		c.kernelDrops = d("dialtrap_sip_udp_kernel_drops_total", "UDP datagrams the kernel dropped before capture read them (raise --sip-read-buffer).")
	}
	if s.RepliesOverBudget != nil {
		c.overBudget = d("dialtrap_sip_replies_over_budget_total", "Probes recorded but not answered: their source was over its reply budget.")
	}
	if s.Peers != nil {
		c.peers = d("dialtrap_p2p_peers", "Peers connected now.")
		c.peerPublished = d("dialtrap_p2p_events_published_total", "Own events published to peers.")
		c.peerReceived = d("dialtrap_p2p_events_received_total", "Events from peers that passed the checks (gossip and catch-up).")
		c.peerRejected = d("dialtrap_p2p_events_rejected_total", "Events from peers refused, by reason.", "reason")
		c.peerDropped = d("dialtrap_p2p_messages_dropped_total", "Gossip messages dropped for want of room, by queue.", "queue")
		c.peerPending = d("dialtrap_p2p_events_pending", "Events from peers held by the trust gate.")
		c.peerPendingDropped = d("dialtrap_p2p_events_pending_dropped_total", "Held events dropped from the full trust gate.")
	}
	if s.StoreSpool != nil {
		c.ssSpooling = d("dialtrap_store_spooling", "1 while store writes go to the disk spool (the store failed, or the spool is not yet written out), else 0.")
		c.ssEvents = d("dialtrap_store_spool_events", "Events in store-spool/ not yet written to the store.")
		c.ssBytes = d("dialtrap_store_spool_bytes", "Bytes of the store spool on disk (bounded by --store-spool-max).")
		c.ssSpooled = d("dialtrap_store_spool_events_spooled_total", "Events put in the store spool because the store failed or the spool was not empty.")
		c.ssReplayed = d("dialtrap_store_spool_events_replayed_total", "Events written from the spool into the store.")
		c.ssFull = d("dialtrap_store_spool_full_refusals_total", "Store writes refused because the spool was full (--store-spool-max); the queue holds them, then drops the oldest.")
		c.ssRefused = d("dialtrap_store_spool_events_refused_total", "Spooled events the store refused for good, skipped.")
		c.ssCorrupt = d("dialtrap_store_spool_records_corrupt_total", "Spool records that could not be read back, skipped.")
		c.ssTorn = d("dialtrap_store_spool_records_torn_total", "Records cut at start, torn by a crash in the middle of their append.")
		c.ssFailures = d("dialtrap_store_spool_replay_errors_total", "Failed writes of spooled events to the store (each retried with back-off).")
	}
	if s.Webhook != nil {
		c.spoolEvents = d("dialtrap_webhook_spool_events", "Events in the webhook spool not yet delivered.")
		c.spoolBytes = d("dialtrap_webhook_spool_bytes", "Bytes of the webhook spool on disk.")
		c.whDelivered = d("dialtrap_webhook_events_delivered_total", "Events the webhook endpoint accepted.")
		c.whRejected = d("dialtrap_webhook_events_rejected_total", "Events the endpoint refused for good (kept in rejected.jsonl).")
		c.whFailures = d("dialtrap_webhook_delivery_failures_total", "Failed delivery attempts (each retried).")
		c.whDropped = d("dialtrap_webhook_events_dropped_total", "Events removed from the full spool before delivery (--webhook-spool-max).")
	}
	if s.Fold != nil {
		c.folded = d("dialtrap_fold_probes_folded_total", "Probes folded into an event that stands for them and others alike (repeat_count), rather than stored one by one.")
		c.foldEvents = d("dialtrap_fold_events_total", "Folded events passed on at the end of their window.")
		c.foldHeld = d("dialtrap_fold_probes_held_total", "First probes held with their group, not passed on at once, while the store's queue was over half full.")
		c.unfolded = d("dialtrap_fold_probes_unfolded_total", "Probes passed on unfolded because the groups held reached their bounds.")
		c.foldGroups = d("dialtrap_fold_groups", "Groups of alike probes open now.")
		c.foldBytes = d("dialtrap_fold_bytes", "Bytes the probes held for open groups take.")
	}
	if s.Hits != nil {
		c.hits = d("dialtrap_hits_total", "Lookups that matched a known-bad entry (API and policy agent).")
		c.hitsDropped = d("dialtrap_hits_alert_dropped_total", "Hits the alert rules never saw: newer ones overwrote them in the ring first (the lookup never waits).")
		c.alerts = d("dialtrap_hit_alerts_total", "Alerts raised (first hit per entry per --alert-window that passed the rules).")
		c.notified = d("dialtrap_hit_notifications_total", "Alerts handed to a notifier (a webhook's spool, syslog).", "notifier")
		c.notifyFailed = d("dialtrap_hit_notification_failures_total", "Alerts a notifier could not take.", "notifier")
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.s.Sinks != nil {
		for _, s := range c.s.Sinks() {
			gauge(c.queueEvents, float64(s.Queued), s.Name)
			gauge(c.queueBytes, float64(s.QueuedBytes), s.Name)
			counter(c.delivered, s.Delivered, s.Name)
			counter(c.dropped, s.Dropped, s.Name)
			counter(c.refused, s.Refused, s.Name)
			counter(c.writeErrors, s.Failures, s.Name)
		}
	}
	if c.s.KernelDrops != nil {
		counter(c.kernelDrops, c.s.KernelDrops())
	}
	if c.s.RepliesOverBudget != nil {
		counter(c.overBudget, c.s.RepliesOverBudget())
	}
	if c.s.Peers != nil {
		p := c.s.Peers()
		gauge(c.peers, float64(p.Connected))
		counter(c.peerPublished, p.Published)
		counter(c.peerReceived, p.Received)
		for _, r := range bounded(p.Rejected, peerReasons) {
			counter(c.peerRejected, r.v, r.label)
		}
		for _, r := range bounded(p.Dropped, dropQueues) {
			counter(c.peerDropped, r.v, r.label)
		}
		gauge(c.peerPending, float64(p.Pending))
		counter(c.peerPendingDropped, p.PendingDropped)
	}
	if c.s.StoreSpool != nil {
		ss := c.s.StoreSpool()
		spooling := 0.0
		if ss.Spooling {
			spooling = 1
		}
		gauge(c.ssSpooling, spooling)
		gauge(c.ssEvents, float64(ss.Events))
		gauge(c.ssBytes, float64(ss.Bytes))
		counter(c.ssSpooled, ss.Spooled)
		counter(c.ssReplayed, ss.Replayed)
		counter(c.ssFull, ss.FullRefusals)
		counter(c.ssRefused, ss.Refused)
		counter(c.ssCorrupt, ss.Corrupt)
		counter(c.ssTorn, ss.Torn)
		counter(c.ssFailures, ss.Failures)
	}
	if c.s.Webhook != nil {
		w := c.s.Webhook()
		gauge(c.spoolEvents, float64(w.SpoolEvents))
		gauge(c.spoolBytes, float64(w.SpoolBytes))
		counter(c.whDelivered, w.Delivered)
		counter(c.whRejected, w.Rejected)
		counter(c.whFailures, w.Failures)
		counter(c.whDropped, w.Dropped)
	}
	if c.s.Fold != nil {
		f := c.s.Fold()
		counter(c.folded, f.Folded)
		counter(c.foldEvents, f.Emitted)
		counter(c.foldHeld, f.Held)
		counter(c.unfolded, f.Unfolded)
		gauge(c.foldGroups, float64(f.Groups))
		gauge(c.foldBytes, float64(f.Bytes))
	}
	if c.s.Hits != nil {
		h := c.s.Hits()
		counter(c.hits, h.Hits)
		counter(c.hitsDropped, h.Dropped)
		counter(c.alerts, h.Alerts)
		for _, n := range h.Notifiers {
			counter(c.notified, n.Sent, n.Name)
			counter(c.notifyFailed, n.Failed, n.Name)
		}
	}
}

type labelled struct {
	label string
	v     uint64
}

// bounded returns a value for every known label (0 when m lacks it, so every series exists
// from the start) and one "other" for the rest, when there is any.
func bounded(m map[string]uint64, known []string) []labelled {
	out := make([]labelled, 0, len(known)+1)
	var other uint64
	rest := len(m)
	for _, k := range known {
		v, ok := m[k]
		if ok {
			rest--
		}
		out = append(out, labelled{k, v})
	}
	if rest > 0 {
		for k, v := range m {
			if !slices.Contains(known, k) {
				other += v
			}
		}
		out = append(out, labelled{"other", other})
	}
	return out
}
