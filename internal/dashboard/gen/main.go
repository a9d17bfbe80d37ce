// Command gen turns world-atlas's countries-110m.json (TopoJSON, ISC licence, from Natural
// Earth's public-domain 1:110m data) into the dashboard's world map: one SVG <path> per
// country, its id the ISO 3166-1 alpha-2 code the API reports, so the page colours a country
// by setting one attribute and the browser decodes nothing. It runs at development time only
// (go generate ./internal/dashboard); the TopoJSON file is kept beside it, so the map can be
// rebuilt offline and reviewed in diffs.
//
// The projection is Miller's cylindrical (familiar proportions, straight parallels, no
// trigonometry in the page); Antarctica is left out: no SIP scanner lives there and it would
// take a fifth of the height.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"log"
	"math"
	"os"
	"sort"
	"strconv"
)

type topology struct {
	Transform struct {
		Scale     [2]float64 `json:"scale"`
		Translate [2]float64 `json:"translate"`
	} `json:"transform"`
	Objects struct {
		Countries struct {
			Geometries []geometry `json:"geometries"`
		} `json:"countries"`
	} `json:"objects"`
	Arcs [][][2]float64 `json:"arcs"`
}

type geometry struct {
	Type       string          `json:"type"`
	Arcs       json.RawMessage `json:"arcs"`
	ID         string          `json:"id"`
	Properties struct {
		Name string `json:"name"`
	} `json:"properties"`
}

// width of the map in SVG units; the height follows from the projection. Coordinates are
// written with one decimal: at 1,000 units across, a tenth is finer than any screen shows it.
const width = 1000

func main() {
	in := flag.String("in", "gen/countries-110m.json", "world-atlas TopoJSON")
	out := flag.String("out", "assets/world.svg", "SVG to write")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	var t topology
	if err := json.Unmarshal(b, &t); err != nil {
		log.Fatal(err)
	}
	svg, err := render(&t)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, svg, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("%s: %d bytes", *out, len(svg))
}

// arcs decodes the quantized, delta-encoded arcs into longitude/latitude points.
func (t *topology) arcs() [][][2]float64 {
	out := make([][][2]float64, len(t.Arcs))
	s, tr := t.Transform.Scale, t.Transform.Translate
	for i, a := range t.Arcs {
		var x, y float64
		pts := make([][2]float64, len(a))
		for j, p := range a {
			x += p[0]
			y += p[1]
			pts[j] = [2]float64{x*s[0] + tr[0], y*s[1] + tr[1]}
		}
		out[i] = pts
	}
	return out
}

// miller projects a point; y grows downwards, as in SVG.
func miller(lon, lat float64) (x, y float64) {
	phi := lat * math.Pi / 180
	return lon, -1.25 * math.Log(math.Tan(math.Pi/4+0.4*phi)) * 180 / math.Pi
}

type country struct {
	code, name string
	rings      [][][2]float64 // projected
}

func render(t *topology) ([]byte, error) {
	arcs := t.arcs()
	byCode := map[string]*country{}
	var codes []string
	for _, g := range t.Objects.Countries.Geometries {
		code := iso3166[g.ID]
		if g.ID == "" {
			code = byName[g.Properties.Name]
		}
		if code == "" {
			return nil, fmt.Errorf("feature %q (%s) has no alpha-2 code: add it to iso.go", g.ID, g.Properties.Name)
		}
		if code == "AQ" {
			continue
		}
		var polys [][][]int
		switch g.Type {
		case "Polygon":
			var p [][]int
			if err := json.Unmarshal(g.Arcs, &p); err != nil {
				return nil, err
			}
			polys = [][][]int{p}
		case "MultiPolygon":
			if err := json.Unmarshal(g.Arcs, &polys); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("feature %s: geometry %s", code, g.Type)
		}
		c := byCode[code]
		if c == nil {
			c = &country{code: code, name: g.Properties.Name}
			byCode[code] = c
			codes = append(codes, code)
		}
		for _, p := range polys {
			for _, ring := range p {
				c.rings = append(c.rings, project(stitch(arcs, ring))...)
			}
		}
	}
	sort.Strings(codes)
	minX, minY, maxX, maxY := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	for _, c := range byCode {
		for _, r := range c.rings {
			for _, p := range r {
				x := math.Max(-180, math.Min(180, p[0])) // copies beyond the antimeridian are clipped
				minX, maxX = math.Min(minX, x), math.Max(maxX, x)
				minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
			}
		}
	}
	k := width / (maxX - minX)
	height := math.Ceil((maxY - minY) * k)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" id=\"worldmap\" role=\"img\" aria-label=\"World map of probe origins\">\n", width, int(height))
	buf.WriteString("<!-- Made with Natural Earth (public domain) via world-atlas 2.0.2 (ISC, Mike Bostock); see docs/dashboard.md -->\n")
	for _, code := range codes {
		c := byCode[code]
		fmt.Fprintf(&buf, "<path id=\"%s\" d=\"", code)
		for _, r := range c.rings {
			writeRing(&buf, r, minX, minY, k)
		}
		fmt.Fprintf(&buf, "\"><title>%s</title></path>\n", html.EscapeString(c.name))
	}
	buf.WriteString("</svg>\n")
	return buf.Bytes(), nil
}

// stitch joins a ring's arcs; a negative index (~i) is arc i reversed. Each arc after the
// first starts where the previous one ended: that point is not repeated.
func stitch(arcs [][][2]float64, ring []int) [][2]float64 {
	var out [][2]float64
	for i, a := range ring {
		var pts [][2]float64
		if a < 0 {
			src := arcs[^a]
			pts = make([][2]float64, len(src))
			for j := range src {
				pts[j] = src[len(src)-1-j]
			}
		} else {
			pts = arcs[a]
		}
		if i > 0 {
			pts = pts[1:]
		}
		out = append(out, pts...)
	}
	return out
}

// project projects a ring. Rings that cross the antimeridian (Russia's Chukotka, Fiji) are
// unwrapped so that no edge jumps across the whole map, and drawn a second time shifted by
// 360°, so the part beyond one edge shows at the other (the SVG's viewport clips both).
// A point on the antimeridian may be stored as -180 or +180 indifferently: unwrapping
// takes care of it too.
func project(r [][2]float64) [][][2]float64 {
	u := make([][2]float64, len(r))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, p := range r {
		if i > 0 {
			for p[0]-u[i-1][0] > 180 {
				p[0] -= 360
			}
			for p[0]-u[i-1][0] < -180 {
				p[0] += 360
			}
		}
		u[i] = p
		lo, hi = math.Min(lo, p[0]), math.Max(hi, p[0])
	}
	rings := [][][2]float64{u}
	if hi > 180.0001 {
		rings = append(rings, shift(u, -360))
	}
	if lo < -180.0001 {
		rings = append(rings, shift(u, 360))
	}
	for _, ring := range rings {
		for i, p := range ring {
			ring[i][0], ring[i][1] = miller(p[0], p[1])
		}
	}
	return rings
}

func shift(r [][2]float64, d float64) [][2]float64 {
	out := make([][2]float64, len(r))
	for i, p := range r {
		out[i] = [2]float64{p[0] + d, p[1]}
	}
	return out
}

// writeRing writes one closed subpath in relative moves, rounded to tenths, skipping points
// that round onto the previous one: most of the file is these numbers.
func writeRing(buf *bytes.Buffer, r [][2]float64, minX, minY, k float64) {
	var px, py int64 // previous point, in tenths
	n := 0
	for i, p := range r {
		x := int64(math.Round((p[0] - minX) * k * 10))
		y := int64(math.Round((p[1] - minY) * k * 10))
		if i == 0 {
			buf.WriteString("M" + tenths(x) + " " + tenths(y))
		} else {
			dx, dy := x-px, y-py
			if dx == 0 && dy == 0 {
				continue
			}
			if n == 1 {
				buf.WriteString("l")
			} else {
				buf.WriteString(" ")
			}
			buf.WriteString(tenths(dx) + " " + tenths(dy))
		}
		px, py = x, y
		n++
	}
	buf.WriteString("z")
}

// tenths writes v/10 with at most one decimal and no leading zero ("-.3", "12", "4.5").
func tenths(v int64) string {
	s := strconv.FormatFloat(float64(v)/10, 'f', -1, 64)
	switch {
	case len(s) > 1 && s[0] == '0' && s[1] == '.':
		s = s[1:]
	case len(s) > 2 && s[:2] == "-0":
		s = "-" + s[2:]
	}
	return s
}
