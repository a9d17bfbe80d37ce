package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/dialtrap/dialtrap/internal/peerinfo"
)

// runPeers asks a running node's API for its peers and prints them.
func runPeers(args []string, stdout, stderr io.Writer) int {
	f := newFlags("peers", "peers [flags]", "Lists the peers of a running node (it needs -a, and -p or --opendht).", stdout, stderr)
	var af apiFlags
	af.add(f, "the node's REST API (default: http:// + --api-addr)", true)
	asJSON := f.Bool("json", false, "print the API's JSON as it is")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap peers -h)", f.Arg(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	c := af.client()
	if err := c.CheckURL(); err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	body, err := c.Peers(ctx)
	if errors.Is(err, errPeersOff) {
		return f.fail(exitUsage, "%v", err)
	}
	if err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	if *asJSON {
		stdout.Write(append(body, '\n'))
		return exitOK
	}
	var r peerinfo.Report
	if err := json.Unmarshal(body, &r); err != nil {
		return f.fail(exitRuntime, "the answer of %s is not a peer report: %v", c.BaseURL, err)
	}
	printPeers(stdout, r)
	return exitOK
}

func printPeers(w io.Writer, r peerinfo.Report) {
	if r.OpenDHT != nil {
		printOpenDHT(w, r.OpenDHT)
		if r.ID == "" { // --opendht without -p
			return
		}
		fmt.Fprintln(w)
	}
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

// printOpenDHT prints the OpenDHT bridge's part of the report.
func printOpenDHT(w io.Writer, d *peerinfo.OpenDHT) {
	fmt.Fprintf(w, "OpenDHT     node %s on UDP port %d, %d nodes in the routing table\n", d.NodeID, d.Port, d.Nodes)
	fmt.Fprintf(w, "key         %s (%s)\n", d.Key, d.KeyHash)
	fmt.Fprintf(w, "values      received %d, accepted %d, pending %d (dropped %d), min sightings %d\n",
		d.Received, d.Accepted, d.Pending, d.PendingDropped, d.MinSightings)
	if len(d.Refused) > 0 {
		var ref []string
		for _, k := range slices.Sorted(maps.Keys(d.Refused)) {
			ref = append(ref, fmt.Sprintf("%s %d", k, d.Refused[k]))
		}
		fmt.Fprintf(w, "refused     %s\n", strings.Join(ref, ", "))
	}
	fmt.Fprintf(w, "publishing  %s, published %d (confirmed %d, failed %d); relay to libp2p %s\n",
		yesNo(d.Publish), d.Published, d.PutsConfirmed, d.PutsFailed, yesNo(d.Relay))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
