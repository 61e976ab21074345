# plot.gp: the chart of `evring-bench all` (bench/results/latest.png).
#
#   gnuplot -e "datafile='latest.dat'; outfile='latest.png'; have_hot=1; have_lat=1; have_loss=1; have_demo=1; have_sweep=1; have_sys='1 1 1 1'" plot.gp
#
# latest.dat holds eight blocks (gnuplot's index 0-7; bench_all.c writes
# them): the hot path (label, 1-thread ns, 2-thread ns), latency percentiles
# (case, p50, p99, p99.9 ns), loss at full speed (system, median %, worst %),
# evring-demo's throughput (state, req/s), and the loss sweep, a block per
# system (evring_live, evring_raw, lttng_default, lttng_8x4m: offered
# M records/s, or the rate achieved at full speed; median loss %; the loss
# floored for the log scale; 1 on the full-speed line). A have_*
# of 0 leaves its panel saying so; have_sys says which sweep blocks have data.

if (!exists("datafile")) datafile = 'latest.dat'
if (!exists("outfile")) outfile = 'latest.png'
if (!exists("have_hot")) have_hot = 1
if (!exists("have_lat")) have_lat = 1
if (!exists("have_loss")) have_loss = 1
if (!exists("have_demo")) have_demo = 1
if (!exists("have_sweep")) have_sweep = 1
if (!exists("have_sys")) have_sys = '1 1 1 1'

set terminal pngcairo size 1400,1500 font "sans,10" noenhanced
set output outfile
set datafile missing "nan"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set xtics rotate by -30 nomirror
set multiplot layout 3,2 title "evring benchmarks (medians; see latest.md)"

# A panel with nothing to show.
none(t) = sprintf("%s: not measured (see latest.md)", t)

set title "Hot path: ns per call (log scale)"
if (have_hot) {
	set logscale y
	set ylabel "ns per call, per thread"
	plot datafile index 0 using 2:xtic(1) title "1 thread" lc rgb "#4878cf", \
	     '' index 0 using 3 title "2 threads" lc rgb "#d65f5f"
	unset logscale y
} else {
	unset xtics; unset ytics; set yrange [0:1]
	set label 1 none("hot path") at graph 0.5, 0.5 center
	plot 2 notitle
	unset label 1; set xtics; set ytics; set autoscale y
}

set title "Never blocks: per-call latency by consumer state (log scale)"
if (have_lat) {
	set logscale y
	set ylabel "ns"
	plot datafile index 1 using 2:xtic(1) title "p50" lc rgb "#6acc65", \
	     '' index 1 using 3 title "p99" lc rgb "#d5bb67", \
	     '' index 1 using 4 title "p99.9" lc rgb "#956cb4"
	unset logscale y
} else {
	unset xtics; unset ytics; set yrange [0:1]
	set label 1 none("latency") at graph 0.5, 0.5 center
	plot 2 notitle
	unset label 1; set xtics; set ytics; set autoscale y
}

set title "Loss at full speed, 2 threads, consumer attached"
if (have_loss) {
	set ylabel "% of records lost"
	set yrange [0:*]
	plot datafile index 2 using 2:xtic(1) title "median" lc rgb "#4878cf", \
	     '' index 2 using 3 title "worst run" lc rgb "#d65f5f"
	set autoscale y
} else {
	unset xtics; unset ytics; set yrange [0:1]
	set label 1 none("loss") at graph 0.5, 0.5 center
	plot 2 notitle
	unset label 1; set xtics; set ytics; set autoscale y
}

set title "evring-demo at its default load: requests per second"
if (have_demo) {
	set ylabel "req/s"
	set yrange [0:*]
	plot datafile index 3 using 2:xtic(1) title "median" lc rgb "#4878cf"
	set autoscale y
} else {
	unset xtics; unset ytics; set yrange [0:1]
	set label 1 none("evring-demo") at graph 0.5, 0.5 center
	plot 2 notitle
	unset label 1; set xtics; set ytics; set autoscale y
}

set title "Loss sweep, 2 writer threads: records lost by offered rate (log scales; a loss of 0 at 1e-4 %;\nopen circles: full speed, at the rate achieved)"
if (have_sweep) {
	set style data linespoints
	set logscale x
	set logscale y
	set xtics norotate
	set format y "%g"
	set xlabel "records offered, M/s"
	set ylabel "% of records lost"
	set yrange [5e-5:200]
	set key top left
	names = "evring_live evring_raw lttng_default lttng_8x4m"
	colors = "#4878cf #6acc65 #d65f5f #956cb4"
	cmd = "plot "
	sep = ""
	do for [i=1:4] {
		if (word(have_sys, i) eq "1") {
			cmd = cmd . sep . sprintf("datafile index %d using ($4 == 0 ? $1 : NaN):3 with linespoints lw 2 pt 7 lc rgb '%s' title '%s', datafile index %d using ($4 == 1 ? $1 : NaN):3 with points pt 6 ps 2 lw 2 lc rgb '%s' notitle", 3 + i, word(colors, i), word(names, i), 3 + i, word(colors, i))
			sep = ", "
		}
	}
	if (sep eq "") {
		cmd = "plot 2 notitle"
	}
	eval cmd
	unset logscale x
	unset logscale y
	unset xlabel
	set autoscale y
} else {
	unset xtics; unset ytics; set yrange [0:1]
	set label 1 none("loss sweep") at graph 0.5, 0.5 center
	plot 2 notitle
	unset label 1; set xtics; set ytics; set autoscale y
}

unset multiplot
