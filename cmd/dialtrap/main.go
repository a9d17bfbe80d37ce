// Command dialtrap is a SIP honeypot and VoIP fraud-detection node: it records every SIP probe
// it receives into a local store, a JSON log and syslog.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/node"
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
		if sub, ok := subcommands[args[0]]; ok {
			return sub.run(args[1:], stdout, stderr)
		}
	}
	cfg, err := config.Load(args, os.LookupEnv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, config.Usage(subcommandUsage()))
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
	if err := node.CheckP2P(cfg); err != nil { // -p in a binary built with -tags nop2p
		fmt.Fprintf(stderr, "dialtrap: %v\n", err)
		return exitUsage
	}
	log := newLogger(stderr, cfg)
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
		fmt.Fprintf(stderr, "dialtrap: %v\n", err) // once: the log does not repeat it
		if errors.As(err, new(node.ConfigError)) {
			return exitUsage
		}
		return exitRuntime
	}
	return exitOK
}

// newLogger writes text logs to w. The default level is notice: the start-up summary, then
// nothing unless something fails; -v adds info, -d debug (with every SIP message).
func newLogger(w io.Writer, cfg *config.Config) *slog.Logger {
	level := node.LevelNotice
	switch {
	case cfg.Debug:
		level = slog.LevelDebug
	case cfg.Verbose:
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.LevelKey && a.Value.Any() == node.LevelNotice {
				a.Value = slog.StringValue("NOTICE")
			}
			return a
		}}))
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
	build := runtime.Version()
	if !node.P2PBuilt {
		build += ", nop2p" // built with -tags nop2p: no peer-to-peer support
	}
	return fmt.Sprintf("dialtrap %s (commit %s, %s)", version, c, build)
}

// runNode runs a node until ctx ends, then stops it: listeners first, then every queued event
// is written. SIGHUP reopens the JSON log and reloads the never-block list and --api-token-file.
func runNode(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	n, err := node.New(cfg, node.Options{Version: version, Log: log})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := n.Start(ctx); err != nil {
		return err // Start closed what it had opened
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if cerr := n.Close(cctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: flushing queued events")
			return nil
		case <-hup:
			if err := n.Reopen(); err != nil {
				log.Error("reopen JSON log after SIGHUP", "err", err)
			} else {
				log.Info("JSON log reopened")
			}
			if err := n.ReloadTokens(); err != nil {
				log.Error("reload the API tokens after SIGHUP", "err", err)
			}
			if err := n.ReloadNeverBlock(); err != nil {
				log.Error("reload the never-block list after SIGHUP", "err", err)
			} else {
				log.Log(ctx, node.LevelNotice, "never-block list reloaded")
			}
		}
	}
}
