// Command bench runs Stratus's benchmarks and prints one line per figure:
//
//	BENCH <name> <value> <unit>
//
// Each figure is the median of several runs (-runs, default 3). Workloads
// that touch storage get a fresh in-memory Azurite each, so that Azurite's
// artefacts (queue costs growing with resident messages, table scans, the
// 60-second queue GC stall) do not leak from one workload into the next.
// Figures measured against Azurite are Azurite figures, not Azure Storage
// figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// workload measures one or more figures in one run.
type workload struct {
	name string
	run  func(cfg *benchConfig) (map[string]float64, error)
}

type benchConfig struct {
	runs int
	// ops prints each durable run's storage requests by operation.
	ops bool
}

// figureUnits names the unit of every figure.
var figureUnits = map[string]string{}

func unit(name, u string) string { figureUnits[name] = u; return name }

func main() {
	runs := flag.Int("runs", 3, "runs per workload; the median is reported")
	only := flag.String("only", "", "comma-separated workload names to run (default: all)")
	ops := flag.Bool("ops", false, "print each durable run's host storage requests by operation (stderr)")
	flag.BoolVar(&traceStalls, "stalls", false, "print every Azurite probe slower than 100 ms (stderr)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (host side) to this file")
	flag.Parse()
	cfg := &benchConfig{runs: *runs, ops: *ops}
	fmt.Printf("BENCH machine %q\n", machine())
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	selected := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			selected[n] = true
		}
	}
	failed := false
	for _, w := range workloads() {
		if len(selected) > 0 && !selected[w.name] {
			continue
		}
		samples := map[string][]float64{}
		var order []string
		for i := range cfg.runs {
			figs, err := w.run(cfg)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench %s run %d: %v\n", w.name, i+1, err)
				failed = true
				break
			}
			for k, v := range figs {
				if _, ok := samples[k]; !ok {
					order = append(order, k)
				}
				samples[k] = append(samples[k], v)
			}
		}
		slices.Sort(order)
		for _, k := range order {
			fmt.Printf("BENCH %s %s %s\n", k, format(median(samples[k])), figureUnits[k])
		}
	}
	if failed {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// workloads lists every workload; -only selects some by name. Add a
// workload by appending it here (the durable engine's come from
// durableWorkloads).
func workloads() []workload {
	return append([]workload{
		{name: "http", run: benchHTTP},
		{name: "queue", run: benchQueue},
	}, durableWorkloads()...)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func format(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = ", load " + strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%s, %d cores%s, %s %s/%s, %s%s", cpu, runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"), load)
}
