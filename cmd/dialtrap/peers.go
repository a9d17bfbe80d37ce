package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/dialtrap/dialtrap/internal/peer"
)

// runPeers asks a running node's API for its peers and prints them.
func runPeers(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("peers", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: dialtrap peers [flags]\n\nLists the peers of a running node (it needs -p and -a).\n\n%s", fs.FlagUsages())
	}
	apiURL := fs.String("api-url", "http://127.0.0.1:8082", "the node's REST API")
	token := fs.String("api-token", os.Getenv("DIALTRAP_API_TOKEN"), "bearer token of the API (default $DIALTRAP_API_TOKEN)")
	asJSON := fs.Bool("json", false, "print the API's JSON as it is")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "dialtrap peers: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := getPeers(ctx, *apiURL, *token)
	if err != nil {
		fmt.Fprintf(stderr, "dialtrap peers: %v\n", err)
		return exitRuntime
	}
	if *asJSON {
		stdout.Write(append(body, '\n'))
		return exitOK
	}
	var r peer.Report
	if err := json.Unmarshal(body, &r); err != nil {
		fmt.Fprintf(stderr, "dialtrap peers: the answer of %s is not a peer report: %v\n", *apiURL, err)
		return exitRuntime
	}
	printPeers(stdout, r)
	return exitOK
}

func getPeers(ctx context.Context, base, token string) ([]byte, error) {
	u := strings.TrimRight(base, "/") + "/peers"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("--api-url %q: %w", base, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask %s (is the node running with -a?): %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s", u, e.Error)
		}
		return nil, fmt.Errorf("%s: %s %.200s", u, resp.Status, body)
	}
	return body, nil
}

func printPeers(w io.Writer, r peer.Report) {
	fmt.Fprintf(w, "peer ID     %s\n", r.ID)
	for _, a := range r.Addrs {
		fmt.Fprintf(w, "listening   %s\n", a)
	}
	var rej []string
	for _, k := range slices.Sorted(maps.Keys(r.Rejected)) {
		rej = append(rej, fmt.Sprintf("%s %d", k, r.Rejected[k]))
	}
	fmt.Fprintf(w, "events      published %d, received %d, pending %d (dropped %d), min sightings %d\n",
		r.Published, r.Received, r.Pending, r.PendingDropped, r.MinSightings)
	if len(rej) > 0 {
		fmt.Fprintf(w, "refused     %s\n", strings.Join(rej, ", "))
	}
	fmt.Fprintf(w, "peers       %d\n\n", r.PeersTotal)
	if len(r.Peers) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER ID\tDIRECTION\tTOPIC\tTRUSTED\tRECEIVED\tREFUSED\tCAUGHT UP\tSCORE\tADDRESS")
	for _, p := range r.Peers {
		addr := ""
		if len(p.Addrs) > 0 {
			addr = p.Addrs[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.0f\t%s\n", p.ID, p.Direction, yesNo(p.Topic), yesNo(p.Trusted),
			p.Received, p.Rejected, p.CaughtUp, p.Score, addr)
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
