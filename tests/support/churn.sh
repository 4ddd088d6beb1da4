#!/usr/bin/env bash
# Pid churn for the soak: about PROCS short processes and SESSIONS new
# sessions (setsid), paced evenly over SECONDS by WORKERS loops. Used by
# `cargo xtask soak` and by tests/soak.rs. Prints what it started.
#   churn.sh PROCS SESSIONS SECONDS [WORKERS]
set -u
procs=$1 sessions=$2 seconds=$3 workers=${4:-2}

# Microseconds since boot, from /proc/uptime (monotonic: a wall-clock step
# must not end or stall the churn; 10 ms resolution is enough for pacing).
uptime_us() {
	local up _
	read -r up _ </proc/uptime
	echo $((10#${up/./} * 10000))
}

worker() {
	local procs=$1 sessions=$2 start now_us done=0 made=0 total=$(($1 + $2))
	start=$(uptime_us)
	local budget=$((seconds * 1000000))
	while ((done + made < total)); do
		# Sessions interleaved evenly with the processes.
		if ((made * procs < done * sessions || done >= procs)) && ((made < sessions)); then
			setsid /bin/true
			made=$((made + 1))
		else
			/bin/true
			done=$((done + 1))
		fi
		# Ahead of the even pace: wait; behind it: carry on as fast as forks go.
		read -r now_us _ </proc/uptime
		local due=$(((done + made) * budget / total)) now=$((10#${now_us/./} * 10000 - start))
		if ((due > now + 20000)); then
			# read -t on a pipe nobody writes: a sleep that forks nothing.
			read -rt "$(printf '%d.%06d' $(((due - now) / 1000000)) $(((due - now) % 1000000)))" -u "$idle"
		fi
		if ((now > budget + 60000000)); then
			break
		fi
	done
	echo "$done $made"
}

exec {idle}<> <(:)
pids=()
for ((w = 0; w < workers; w++)); do
	worker $((procs / workers)) $((sessions / workers)) >"${TMPDIR:-/tmp}/churn.$$.$w" &
	pids+=($!)
done
wait "${pids[@]}"
p=0 s=0
for ((w = 0; w < workers; w++)); do
	read -r dp ds <"${TMPDIR:-/tmp}/churn.$$.$w"
	p=$((p + dp)) s=$((s + ds))
	rm -f "${TMPDIR:-/tmp}/churn.$$.$w"
done
echo "processes $p sessions $s"
