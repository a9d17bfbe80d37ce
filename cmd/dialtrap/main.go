// Command dialtrap is a SIP honeypot and VoIP fraud-detection node: it records every SIP probe
// it receives into a local store, a JSON log and syslog.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/peer"
	"github.com/dialtrap/dialtrap/internal/sink/jsonlog"
	"github.com/dialtrap/dialtrap/internal/sink/syslog"
	"github.com/dialtrap/dialtrap/internal/sink/webhook"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "0.1.0-dev"
	commit  = ""
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // could not start, or failed while running
	exitUsage   = 2 // bad flags, env or config file
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, versionLine())
			return exitOK
		case "check":
			return runCheck(args[1:], stdout, stderr)
		case "export":
			return runExport(args[1:], stdout, stderr)
		case "import":
			return runImport(args[1:], stdout, stderr)
		case "peers":
			return runPeers(args[1:], stdout, stderr)
		case "block":
			fmt.Fprintf(stderr, "dialtrap: the %q subcommand is not in this version yet\n", args[0])
			return exitUsage
		}
	}
	cfg, err := config.Load(args, os.LookupEnv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, config.Usage())
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "dialtrap: %v\n", err)
		return exitUsage
	}
	if cfg.Version {
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	}
	level := slog.LevelWarn
	switch {
	case cfg.Debug:
		level = slog.LevelDebug
	case cfg.Verbose:
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	for _, n := range cfg.Notices {
		log.Warn(n)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "dialtrap: --cpu-profile: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "dialtrap: --cpu-profile: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runNode(ctx, cfg, log); err != nil {
		log.Error("dialtrap stopped", "err", err)
		fmt.Fprintf(stderr, "dialtrap: %v\n", err)
		return exitRuntime
	}
	return exitOK
}

func versionLine() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("dialtrap %s (commit %s, %s)", version, c, runtime.Version())
}

// closer collects what must be closed at shutdown, in reverse order of opening.
type closer []func() error

func (c *closer) add(f func() error) { *c = append(*c, f) }

func (c closer) close() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i]())
	}
	return errors.Join(errs...)
}

// runNode starts the sinks, the hub and the listeners, and runs until ctx ends; then it stops
// the listeners first and flushes every queued event before returning.
func runNode(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	nodeID, err := event.LoadNodeID(cfg.DataDir)
	if err != nil {
		return err
	}
	warnNotYetBuilt(cfg, log)

	var sinks closer
	defer func() {
		if cerr := sinks.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	h := hub.New(log)
	if cfg.Store != "sqlite" {
		return errors.New("the PostgreSQL store is not in this version yet: use --store sqlite")
	}
	st, err := sqlite.Open(ctx, cfg.DBFile)
	if err != nil {
		return err
	}
	sinks.add(st.Close)
	// The store gets the deepest queue and back-pressure: capture must not lose what it can
	// keep. Queues are sized for bursts in bounded memory (about 1 KiB an event).
	h.Add(st, hub.Options{Capacity: 1 << 15, MaxBatch: 5000, Policy: hub.Block})

	var jl *jsonlog.Log
	if cfg.JSONLog {
		if jl, err = jsonlog.Open(cfg.JSONLogFile); err != nil {
			return err
		}
		sinks.add(jl.Close)
		h.Add(jl, hub.Options{Capacity: 1 << 14, MaxBatch: 1000})
	}
	if cfg.Syslog {
		sl, err := syslog.Open(cfg.SyslogAddr)
		if err != nil {
			return err
		}
		sinks.add(sl.Close)
		h.Add(sl, hub.Options{Capacity: 1 << 14, MaxBatch: 500})
	}
	if cfg.WebhookURL != "" {
		wh, err := webhook.Open(webhook.Config{
			URL: cfg.WebhookURL, UserAgent: event.AppName + "/" + version,
			ClientID: cfg.OAuth2ClientID, ClientSecret: cfg.OAuth2ClientSecret,
			TokenURL: cfg.WebhookTokenURL, Audience: cfg.WebhookAudience,
			Secret:   cfg.WebhookSecret,
			SpoolDir: filepath.Join(cfg.DataDir, "webhook-spool"), SpoolMax: cfg.WebhookSpoolMax,
			Concurrency: cfg.WebhookConcurrent, Timeout: cfg.WebhookTimeout, MaxBackoff: cfg.WebhookMaxBackoff,
			PeerEvents: cfg.WebhookPeerEvents, Log: log,
		})
		if err != nil {
			return err
		}
		wh.Start()
		sinks.add(func() error { // after the hub has drained into the spool
			wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return wh.Close(wctx)
		})
		// The spool takes batches as fast as the disk does; the endpoint's pace never reaches
		// this queue.
		h.Add(wh, hub.Options{Capacity: 1 << 14, MaxBatch: 1000})
		if u, err := url.Parse(cfg.WebhookURL); err == nil && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			log.Warn("the webhook URL is plain http: events, signatures and any OAuth2 token cross the network unencrypted; use https", "url", webhook.LogURL(cfg.WebhookURL))
		}
	}
	var p2p *peer.Node
	if cfg.P2P {
		key, err := peer.LoadKey(cfg.DataDir)
		if err != nil {
			return err
		}
		trusted, err := peer.ParseIDs(cfg.P2PTrust)
		if err != nil {
			return fmt.Errorf("--p2p-trust: %w", err)
		}
		p2p, err = peer.Start(peer.Config{
			Key: key, ListenAddrs: cfg.P2PAddr, Bootstrap: cfg.Bootstrap, Log: log,
			PerPeerRate: cfg.P2PRate, PerPeerBurst: max(int(cfg.P2PRate*10), 1),
			Policy: peer.Policy{Trusted: trusted, MinSightings: cfg.P2PMinSightings,
				Known: func(ip, number string) bool { return knownHere(ctx, st, ip, number) }},
			CatchupWindow: cfg.P2PCatchup,
			Recent: func(ctx context.Context, since string, afterID int64, limit int, fn func(*event.Event, int64) error) error {
				return st.Recent(ctx, store.Cursor{Timestamp: since, ID: afterID}, limit,
					func(e *event.Event, c store.Cursor) error { return fn(e, c.ID) })
			},
			// Peer events go through the hub like captured ones: stored and served, never
			// re-published (the p2p sink skips them), sent to the webhook only if asked.
			Receive: func(e *event.Event, _ libpeer.ID) { h.Publish(e) },
		})
		if err != nil {
			return err
		}
		sinks.add(p2p.Close) // after the hub has published this node's queued events
		h.Add(p2p, hub.Options{Capacity: 1 << 14, MaxBatch: 500})
		log.Info("p2p: joined", "peer_id", p2p.ID(), "addrs", p2p.Addrs(), "bootstrap", len(cfg.Bootstrap),
			"trusted", len(trusted), "min_sightings", cfg.P2PMinSightings)
	}
	// Whatever happens below, queued events are written before the sinks close.
	sinks.add(func() error {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := h.Close(dctx)
		for _, s := range h.Stats() {
			log.Info("sink totals", "sink", s.Name, "delivered", s.Delivered, "dropped", s.Dropped, "failures", s.Failures)
		}
		return err
	})

	apiAddr := ""
	if cfg.API {
		ln, err := api.Listen(cfg.APIAddr)
		if err != nil {
			return fmt.Errorf("start the REST API on %s (is another process using the port? set --api-addr): %w", cfg.APIAddr, err)
		}
		apiAddr = ln.Addr().String()
		st.StartLookupFilters()
		acfg := api.Config{
			Store: st, Version: version, Token: cfg.APIToken,
			National: cfg.NumberMatch == "national", Log: log,
		}
		if p2p != nil {
			acfg.Peers = func() any { return p2p.Report() }
		}
		hs := api.Server(api.New(acfg), log)
		served := make(chan error, 1)
		go func() { served <- hs.Serve(ln) }()
		sinks.add(func() error { // before the store closes: no request reads a closed store
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := hs.Shutdown(sctx)
			if errors.Is(err, context.DeadlineExceeded) {
				err = hs.Close()
			}
			if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
			return err
		})
		if cfg.APIToken == "" && !isLoopback(apiAddr) {
			log.Warn("the REST API listens beyond loopback without --api-token: anyone who can reach it can read the collected data", "addr", apiAddr)
		}
	}

	var srv *sip.Server
	if !cfg.SIPDisable {
		scfg := sip.Config{
			Addr: cfg.SIPAddr, Responsive: cfg.SIPResponsive, Persona: cfg.Persona,
			NodeID: nodeID, AppVersion: version,
			MaxConns: cfg.SIPMaxConns, MaxConnsPerIP: cfg.SIPMaxConnsPerIP,
			IdleTimeout: cfg.SIPIdleTimeout, MessageTimeout: cfg.SIPMessageTimeout,
			ReadBuffer: cfg.SIPReadBuffer, Log: log, Publish: h.Publish,
		}
		if cfg.SIPTLS {
			if scfg.TLSConfig, err = sip.TLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.DataDir); err != nil {
				return err
			}
			scfg.TLSAddr = cfg.SIPTLSAddr
		}
		srv = sip.New(scfg)
		sinks.add(func() error { // closed first: no new events once shutdown starts
			err := srv.Close()
			log.Info("SIP capture totals", "messages", srv.Received())
			return err
		})
		if err := srv.Start(ctx); err != nil {
			return err
		}
		attrs := []any{"node_id", nodeID, "version", version, "udp", srv.UDPAddr(), "tcp", srv.TCPAddr(),
			"responsive", cfg.SIPResponsive, "db", cfg.DBFile}
		if cfg.SIPTLS {
			attrs = append(attrs, "tls", srv.TLSAddr())
		}
		if cfg.JSONLog {
			attrs = append(attrs, "json_log", cfg.JSONLogFile)
		}
		if apiAddr != "" {
			attrs = append(attrs, "api", apiAddr)
		}
		if cfg.WebhookURL != "" {
			attrs = append(attrs, "webhook", webhook.LogURL(cfg.WebhookURL))
		}
		log.Info("dialtrap running", attrs...)
	} else {
		log.Warn("SIP capture is disabled (-R): this node records nothing by itself", "node_id", nodeID)
		log.Info("dialtrap running", "node_id", nodeID, "version", version, "db", cfg.DBFile, "api", apiAddr)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: flushing queued events")
			return nil
		case <-hup:
			if jl != nil {
				if err := jl.Reopen(); err != nil {
					log.Error("reopen JSON log after SIGHUP", "err", err)
				} else {
					log.Info("JSON log reopened")
				}
			}
		}
	}
}

// warnNotYetBuilt names options this version accepts (they are part of the command-line
// contract) but does not act on yet, so an operator is never silently ignored.
func warnNotYetBuilt(cfg *config.Config, log *slog.Logger) {
	for _, f := range []struct {
		on   bool
		name string
	}{
		{cfg.Metrics, "--metrics"},
		{cfg.Retention > 0, "--retention"},
	} {
		if f.on {
			log.Warn("option not in this version yet; ignored", "option", f.name)
		}
	}
}

// knownHere reports whether the store already holds ip or number (seen here, or counted
// before): peers' reports of it then count at once.
func knownHere(ctx context.Context, st store.Store, ip, number string) bool {
	if _, ok, err := st.IP(ctx, ip); ok && err == nil {
		return true
	}
	if number == "" {
		return false
	}
	_, ok, err := st.Number(ctx, number)
	return ok && err == nil
}

// isLoopback reports whether a listen address only accepts local connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
