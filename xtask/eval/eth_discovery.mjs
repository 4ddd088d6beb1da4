// Four Ethereum discovery (discv4) nodes: @ethereumjs/devp2p's DPT, the
// discovery table of its execution clients, on loopback UDP ports that are
// not Ethereum's default (30303). Each bootstraps to the next, so they ping,
// pong, ask for neighbours and learn of each other, as a node's discovery
// does when it joins the network. Usage: node eth_discovery.mjs SECONDS PORT...
import { DPT } from '@ethereumjs/devp2p'
import { randomBytes } from 'crypto'

const seconds = Number(process.argv[2] || 8)
const ports = process.argv.slice(3).map(Number)
const nodes = ports.map((port) => {
  const dpt = new DPT(randomBytes(32), {
    endpoint: { address: '127.0.0.1', udpPort: port, tcpPort: port },
    refreshInterval: 1000,
    timeout: 2000,
  })
  dpt.events.on('error', (e) => console.log(`node ${port}:`, e.message))
  dpt.bind(port, '127.0.0.1')
  return dpt
})
await new Promise((r) => setTimeout(r, 300))
for (let i = 0; i < nodes.length; i++) {
  const next = ports[(i + 1) % ports.length]
  try { await nodes[i].bootstrap({ address: '127.0.0.1', udpPort: next }) } catch (e) { console.log('bootstrap:', e.message) }
}
await new Promise((r) => setTimeout(r, seconds * 1000))
// The case ran when every node knows at least two others.
const known = nodes.map((d) => d.getPeers().length)
console.log('peers known per node', known)
nodes.forEach((d) => d.destroy())
process.exit(known.every((n) => n >= 2) ? 0 : 1)
