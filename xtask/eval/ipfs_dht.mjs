// Two IPFS DHT nodes: js-libp2p over TCP + Noise + yamux, or over QUIC
// (`quic` as the second argument: @chainsafe/libp2p-quic, TLS and streams
// of its own), running the IPFS Kademlia DHT (/ipfs/kad/1.0.0) with
// identify and ping, as an IPFS node's swarm does. The second dials the
// first, then keeps providing keys and asking for providers and peers.
// Usage: node ipfs_dht.mjs SECONDS [tcp|quic]
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { quic } from '@chainsafe/libp2p-quic'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT } from '@libp2p/kad-dht'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'

// Node 20 (Debian's) has no Promise.withResolvers, which libp2p 3 uses.
Promise.withResolvers ??= () => {
  let resolve, reject
  const promise = new Promise((a, b) => { resolve = a; reject = b })
  return { promise, resolve, reject }
}

const overQuic = process.argv[3] === 'quic'
const transport = overQuic
  ? { addresses: { listen: ['/ip4/127.0.0.1/udp/0/quic-v1'] }, transports: [quic()] }
  : {
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    }
const node = () => createLibp2p({
  ...transport,
  services: {
    identify: identify(),
    ping: ping(),
    // Loopback peers are kept (the public-network default drops them).
    dht: kadDHT({ protocol: '/ipfs/kad/1.0.0', clientMode: false, peerInfoMapper: (p) => p }),
  },
})
const a = await node()
const b = await node()
await b.dial(a.getMultiaddrs()[0])
const seconds = Number(process.argv[2] || 10)
const end = Date.now() + seconds * 1000
let n = 0
let rounds = 0
while (Date.now() < end) {
  const cid = CID.create(1, raw.code, await sha256.digest(new TextEncoder().encode(`block ${n++}`)))
  try {
    for await (const _ of b.services.dht.provide(cid, { signal: AbortSignal.timeout(2000) })) {}
    let found = 0
    for await (const e of a.services.dht.findProviders(cid, { signal: AbortSignal.timeout(2000) })) if (e.name === 'PROVIDER') found++
    console.log('provided', cid.toString(), 'providers seen', found)
    if (found > 0) rounds++
  } catch (e) { console.log('dht:', e.message) }
  await new Promise(r => setTimeout(r, 300))
}
await b.stop(); await a.stop()
// The case ran when at least one key was provided and found.
process.exit(rounds > 0 ? 0 : 1)
