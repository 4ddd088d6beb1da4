#!/bin/sh
# Three Monero daemons (Debian's monerod, regtest) peering on loopback on
# ports no rule knows, for SECONDS; with MINE=1 the first is told to mine
# through its RPC, as an operator would. Usage: monero_nodes.sh DIR SECONDS MINE
# regtest applies Monero's latest rules from height 1: mining is RandomX.
set -u
dir=$1 seconds=$2 mine=$3
ports="47180 47280 47380"
# A valid mainnet address (regtest takes mainnet's); nothing is paid to it.
address=44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A
pids=""
for p in $ports; do
    peers=""
    for q in $ports; do [ "$q" = "$p" ] || peers="$peers --add-exclusive-node 127.0.0.1:$q"; done
    monerod --regtest --data-dir "$dir/node-$p" --p2p-bind-ip 127.0.0.1 --p2p-bind-port "$p" \
        --rpc-bind-ip 127.0.0.1 --rpc-bind-port $((p + 1)) --zmq-rpc-bind-port $((p + 2)) \
        --no-igd --allow-local-ip --non-interactive --log-level 0 $peers > "$dir/node-$p.log" 2>&1 &
    pids="$pids $!"
done
# Until the first answers its RPC.
i=0
until curl -fs "http://127.0.0.1:47181/get_info" > /dev/null; do
    i=$((i + 1)); [ $i -gt 60 ] && { kill $pids; exit 1; }
    sleep 0.5
done
# The node answers BUSY until it has finished starting.
i=0
while [ "$mine" = 1 ]; do
    curl -fs -X POST http://127.0.0.1:47181/start_mining -H 'Content-Type: application/json' \
        -d "{\"do_background_mining\":false,\"ignore_battery\":true,\"miner_address\":\"$address\",\"threads_count\":1}" \
        > "$dir/start_mining.json"
    grep -q '"status": "OK"' "$dir/start_mining.json" && break
    i=$((i + 1)); [ $i -gt 60 ] && { kill $pids; exit 1; }
    sleep 0.5
done
sleep "$seconds"
# With the miner on, a block must have been found (height above 1).
status=0
if [ "$mine" = 1 ]; then
    height=$(curl -fs http://127.0.0.1:47181/get_info | sed -n 's/.*"height": \([0-9]*\).*/\1/p')
    [ "${height:-0}" -gt 1 ] || status=1
fi
kill $pids
wait
exit $status
