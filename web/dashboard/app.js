// The dashboard page: draws the agent's state (GET /api/state's shape, pushed as `state` events
// on /api/events; docs/dashboard.md) and, on request, a transfer plan (GET /api/plan). Time series
// are uPlot charts; the heatmap, the holdings and the plan are SVG and tables built from the data.
// Every figure of a table cell carries its raw value in data-value (the tests compare them with
// `vmifs stats --json`). Text from the fleet (image and host names) only ever goes in as text.
/* global uPlot */
'use strict'

const $ = id => document.getElementById(id)
const SVG = 'http://www.w3.org/2000/svg'

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) e.setAttribute(k, String(v))
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}

const MiB = 1024 * 1024
function bytes(n) {
  if (n >= 1024 * MiB) return `${(n / 1024 / MiB).toFixed(2)} GiB`
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}
const pct = r => `${(r * 100).toFixed(1)} %`
/** A table cell showing a figure, its raw value in data-value. */
function fig(key, value, text) {
  return el('td', { 'data-key': key, 'data-value': value, class: 'num' }, text)
}
function table(id, head, rows) {
  const t = $(id)
  t.replaceChildren(el('thead', {}, el('tr', {}, ...head.map(h => el('th', {}, h)))), el('tbody', {}, ...rows))
}
/** A bar of a share (0..1), as SVG. */
function bar(share, cls = 'fill') {
  const w = Math.max(0, Math.min(1, share)) * 100
  return svg(
    'svg',
    { class: 'bar', viewBox: '0 0 100 8', preserveAspectRatio: 'none' },
    svg('rect', { x: 0, y: 0, width: 100, height: 8, class: 'track' }),
    svg('rect', { x: 0, y: 0, width: w, height: 8, class: cls })
  )
}
/** A colour per holder (or donor), the same on every draw: the origin store orange, hosts in the order first seen. */
const PALETTE = ['#2a7', '#36c', '#c3a', '#875', '#0aa', '#a52', '#66a', '#7a2', '#c66', '#488']
const colours = new Map([['origin', '#e8902c']])
function colour(name) {
  if (!colours.has(name)) colours.set(name, PALETTE[(colours.size - 1) % PALETTE.length])
  return colours.get(name)
}

let state
let hostChart
let imageChart
let picked

function overview(s) {
  const st = s.stats
  const tiles = [
    ['hitRate', 'cache hit rate', st.cache.hitRate, pct(st.cache.hitRate)],
    ['sizeBytes', 'cache', st.cache.sizeBytes, `${bytes(st.cache.sizeBytes)} of ${bytes(st.cache.capacityBytes)}`],
    ['fetchBytes', 'fetched', st.fetch.bytes, bytes(st.fetch.bytes)],
    ['servedBytes', 'served to peers', st.served.bytes, bytes(st.served.bytes)],
    ['precision', 'prefetch precision', st.prefetch.precision, pct(st.prefetch.precision)],
    ['recall', 'prefetch recall', st.prefetch.recall, pct(st.prefetch.recall)],
    ['readP99', 'read p99', st.read.p99Ms, `${st.read.p99Ms} ms`]
  ]
  $('overview').replaceChildren(
    ...tiles.map(([k, label, v, text]) =>
      el(
        'div',
        { class: 'tile' },
        el('div', { class: 'label' }, label),
        el('div', { class: 'value', 'data-key': k, 'data-value': v }, text)
      )
    )
  )
}

function images(s) {
  const rows = Object.entries(s.stats.images).map(([name, im]) => {
    const holders = Object.entries(im.fetch.byHolder).sort((a, b) => b[1] - a[1])
    const split = el('td', { 'data-key': 'byHolder', 'data-value': JSON.stringify(im.fetch.byHolder) })
    for (const [h, b] of holders)
      split.append(
        el('span', { class: 'chip', 'data-holder': h }, el('i', { class: 'dot', 'data-colour': h }), `${h} ${bytes(b)}`)
      )
    const share = el(
      'td',
      { 'data-key': 'cachedShare', 'data-value': im.cachedShare, class: 'num' },
      bar(im.cachedShare),
      ` ${pct(im.cachedShare)}`
    )
    return el(
      'tr',
      { 'data-image': name },
      el('td', { class: 'name' }, name),
      fig('size', im.size, bytes(im.size)),
      fig('cachedBytes', im.cachedBytes, bytes(im.cachedBytes)),
      share,
      fig('hitRate', im.hitRate, pct(im.hitRate)),
      fig('readOps', im.readOps, im.readOps),
      fig('fetchBytes', im.fetch.bytes, bytes(im.fetch.bytes)),
      split,
      fig('precision', im.prefetch.precision, pct(im.prefetch.precision)),
      fig('recall', im.prefetch.recall, pct(im.prefetch.recall)),
      fig('modelSessions', im.modelSessions ?? 0, im.modelSessions ?? 0)
    )
  })
  table(
    'images',
    [
      'image',
      'size',
      'cached',
      'cached share',
      'hit rate',
      'reads',
      'fetched',
      'by holder',
      'prefetch precision',
      'prefetch recall',
      'model sessions'
    ],
    rows
  )
  for (const d of document.querySelectorAll('[data-colour]')) d.style.background = colour(d.dataset.colour)
}

function holders(s) {
  const by = Object.entries(s.stats.fetch.byHolder).sort((a, b) => b[1].bytes - a[1].bytes)
  const total = by.reduce((n, [, h]) => n + h.bytes, 0)
  table(
    'holders',
    ['holder', 'bytes', 'share', 'on the wire', 'requests', 'errors', 'p50', 'p99'],
    by.map(([id, h]) => {
      const share = el(
        'td',
        { class: 'num' },
        bar(total ? h.bytes / total : 0, 'holder'),
        ` ${pct(total ? h.bytes / total : 0)}`
      )
      share.querySelector('rect.holder').style.fill = colour(id)
      return el(
        'tr',
        { 'data-holder': id },
        el('td', { class: 'name' }, id),
        fig('bytes', h.bytes, bytes(h.bytes)),
        share,
        fig('wireBytes', h.wireBytes, bytes(h.wireBytes)),
        fig('requests', h.requests, h.requests),
        fig('errors', h.errors, h.errors),
        fig('p50Ms', h.p50Ms, `${h.p50Ms} ms`),
        fig('p99Ms', h.p99Ms, `${h.p99Ms} ms`)
      )
    })
  )
}

function hosts(s) {
  table(
    'hosts',
    ['host', 'state', 'last seen', 'endpoint', 'cache', 'load', 'images', 'whole'],
    s.hosts.map(h =>
      el(
        'tr',
        { 'data-host': h.host, class: h.state },
        el('td', { class: 'name' }, h.host === s.hostId ? `${h.host} (this host)` : h.host),
        el('td', { 'data-key': 'state' }, h.state),
        el(
          'td',
          {},
          h.lastSeen === null ? '—' : `${Math.max(0, Math.round((Date.parse(s.time) - h.lastSeen) / 1000))} s ago`
        ),
        el('td', {}, h.endpoint ?? '—'),
        el(
          'td',
          { class: 'num' },
          h.cacheSizeBytes === null ? '—' : `${bytes(h.cacheSizeBytes)} of ${bytes(h.cacheCapacityBytes)}`
        ),
        el('td', { class: 'num' }, h.load === null ? '—' : h.load.toFixed(2)),
        fig('images', h.images, h.images),
        fig('wholeImages', h.wholeImages, h.wholeImages)
      )
    )
  )
  const hd = s.holdings
  const rows = hd.hosts.map((h, i) =>
    el(
      'tr',
      { 'data-host': h },
      el('th', {}, h),
      ...hd.images.map((im, j) => {
        const share = hd.uniqueBytes[j] ? hd.heldBytes[i][j] / hd.uniqueBytes[j] : 1
        const td = el(
          'td',
          {
            'data-image': im,
            'data-value': hd.heldBytes[i][j],
            title: `${h} holds ${bytes(hd.heldBytes[i][j])} of ${im}`
          },
          pct(share)
        )
        td.style.background = `hsl(210 70% ${96 - share * 50}%)`
        return td
      })
    )
  )
  $('holdings').replaceChildren(
    el('thead', {}, el('tr', {}, el('th', {}, 'holds'), ...hd.images.map(im => el('th', {}, im)))),
    el('tbody', {}, ...rows)
  )
  if (hd.more > 0) $('holdings').append(el('caption', {}, `and ${hd.more} more hosts`))
}

/**
 * An order of the images that puts those sharing the most bytes next to each other, so that a
 * family shows as a block: the largest image first, then each time the one sharing most with the last.
 */
function seriate(matrix) {
  const left = new Set(matrix.keys())
  if (left.size === 0) return []
  let cur = [...left].reduce((x, y) => (matrix[y][y] > matrix[x][x] ? y : x))
  const out = []
  while (left.size > 0) {
    out.push(cur)
    left.delete(cur)
    let next
    for (const k of left) if (next === undefined || matrix[cur][k] > matrix[cur][next]) next = k
    cur = next
  }
  return out
}

function similarity(s) {
  const { images: names, matrix, clusters } = s.similarity
  const n = names.length
  const order = seriate(matrix)
  const cell = 36
  const pad = 120
  const size = pad + n * cell
  const g = svg('svg', {
    viewBox: `0 0 ${size} ${size}`,
    width: size,
    height: size,
    role: 'img',
    'aria-label': 'similarity heatmap'
  })
  for (let i = 0; i < n; i++) {
    const a = order[i]
    g.append(
      svg('text', { x: pad - 6, y: pad + i * cell + cell / 2 + 4, 'text-anchor': 'end', class: 'label' }, names[a])
    )
    g.append(
      svg(
        'text',
        {
          x: pad + i * cell + cell / 2,
          y: pad - 6,
          transform: `rotate(-45 ${pad + i * cell + cell / 2} ${pad - 6})`,
          class: 'label'
        },
        names[a]
      )
    )
    for (let j = 0; j < n; j++) {
      const b = order[j]
      // of the row image's bytes, the share the column image holds too
      const share = matrix[a][a] ? matrix[a][b] / matrix[a][a] : 0
      const r = svg(
        'rect',
        {
          x: pad + j * cell,
          y: pad + i * cell,
          width: cell - 2,
          height: cell - 2,
          fill: `hsl(150 60% ${95 - share * 60}%)`,
          'data-a': names[a],
          'data-b': names[b],
          'data-value': matrix[a][b]
        },
        svg('title', {}, `${names[a]} and ${names[b]} share ${bytes(matrix[a][b])}: ${pct(share)} of ${names[a]}`)
      )
      g.append(r)
      g.append(
        svg(
          'text',
          {
            x: pad + j * cell + cell / 2 - 1,
            y: pad + i * cell + cell / 2 + 3,
            'text-anchor': 'middle',
            class: 'cell'
          },
          Math.round(share * 100)
        )
      )
    }
  }
  $('heatmap').replaceChildren(g)
  table(
    'clusters',
    ['cluster: the images holding its chunks', 'bitset', 'bytes', 'chunks'],
    clusters
      .slice(0, 16)
      .map(c =>
        el(
          'tr',
          {},
          el('td', { 'data-key': 'images' }, c.images.join(' + ')),
          el('td', { class: 'bitset' }, c.bitset),
          fig('bytes', c.bytes, bytes(c.bytes)),
          fig('chunks', c.chunks, c.chunks)
        )
      )
  )
}

function pickers(s) {
  const fill = (sel, values) => {
    const keep = sel.value
    const have = [...sel.options].map(o => o.value)
    if (have.join('\n') === values.join('\n')) return
    sel.replaceChildren(...values.map(v => el('option', { value: v }, v)))
    if (values.includes(keep)) sel.value = keep
  }
  const names = Object.keys(s.stats.images)
  fill($('chart-image-pick'), names)
  fill($('plan-image'), names)
  fill(
    $('plan-to'),
    s.hosts.map(h => h.host)
  )
  if (picked === undefined || !names.includes(picked)) picked = names[0]
}

/** Per interval between samples: the hit rate of the bytes read in it (null: nothing read). */
function intervalRate(h, get) {
  return h.map((p, i) => {
    if (i === 0) return null
    const [hit, miss] = get(p)
    const [h0, m0] = get(h[i - 1])
    const read = hit - h0 + (miss - m0)
    return read > 0 ? (hit - h0) / read : null
  })
}

function chart(existing, target, series, data) {
  const width = Math.max(320, $(target).clientWidth || 480)
  if (existing && existing.series.length === series.length + 1) {
    existing.setData(data)
    return existing
  }
  existing?.destroy()
  return new uPlot(
    {
      width,
      height: 220,
      scales: { x: { time: true }, y: { range: [0, 1] } },
      axes: [{}, { values: (_, v) => v.map(x => `${Math.round(x * 100)} %`) }],
      series: [
        {},
        ...series.map(([label, stroke]) => ({
          label,
          stroke,
          width: 2,
          spanGaps: true,
          value: (_, v) => (v === null ? '—' : pct(v))
        }))
      ]
    },
    data,
    $(target)
  )
}

function charts(s) {
  const h = s.history
  const t = h.map(p => p.t / 1000)
  hostChart = chart(
    hostChart,
    'chart-host',
    [
      ['hit rate', '#2a7'],
      ['prefetch precision', '#36c'],
      ['prefetch recall', '#c63']
    ],
    [
      t,
      intervalRate(h, p => [p.hitBytes, p.missBytes]),
      h.map(p => p.prefetch.precision),
      h.map(p => p.prefetch.recall)
    ]
  )
  const im = p => p.images[picked]
  imageChart = chart(
    imageChart,
    'chart-image',
    [
      ['cached share', '#888'],
      ['hit rate', '#2a7'],
      ['prefetch precision', '#36c'],
      ['prefetch recall', '#c63']
    ],
    [
      t,
      h.map(p => im(p)?.cachedShare ?? null),
      intervalRate(h, p => [im(p)?.hitBytes ?? 0, im(p)?.missBytes ?? 0]),
      h.map(p => im(p)?.precision ?? null),
      h.map(p => im(p)?.recall ?? null)
    ]
  )
}

async function plan(ev) {
  ev?.preventDefault()
  const image = $('plan-image').value
  const to = $('plan-to').value
  const out = $('plan')
  if (!image || !to) return
  out.replaceChildren(el('p', {}, `planning ${image} onto ${to}…`))
  const res = await fetch(`/api/plan?image=${encodeURIComponent(image)}&to=${encodeURIComponent(to)}`)
  const p = await res.json()
  if (!res.ok) {
    out.replaceChildren(el('p', { class: 'error', 'data-key': 'error' }, `${p.error}: ${p.message}`))
    return
  }
  const need = p.need
  const head = el(
    'p',
    { 'data-key': 'need' },
    `${to} holds ${bytes(need.heldBytes)} of ${image}'s ${bytes(need.bytes)}; ` +
      `it lacks ${need.missingChunks} chunks (${bytes(need.missingBytes)})` +
      (need.unavailableChunks ? `, and ${need.unavailableChunks} that no donor holds` : '')
  )
  const methods = [p.plan, ...p.compare]
  const max = Math.max(1, ...methods.map(m => m.shares.reduce((n, x) => n + x.bytes, 0)))
  const rowH = 28
  const w = 640
  const left = 110
  const g = svg('svg', {
    viewBox: `0 0 ${w} ${methods.length * rowH + 24}`,
    width: w,
    height: methods.length * rowH + 24,
    role: 'img',
    'aria-label': 'transfer plan'
  })
  methods.forEach((m, i) => {
    const y = i * rowH + 4
    g.append(
      svg(
        'text',
        { x: left - 8, y: y + 15, 'text-anchor': 'end', class: 'label' },
        m.method === 'lp' ? 'LP plan' : m.method
      )
    )
    let x = left
    for (const sh of m.shares) {
      const bw = (sh.bytes / max) * (w - left - 150)
      g.append(
        svg(
          'rect',
          {
            x,
            y,
            width: Math.max(1, bw),
            height: rowH - 8,
            fill: colour(sh.donor),
            'data-donor': sh.donor,
            'data-method': m.method,
            'data-value': sh.bytes
          },
          svg('title', {}, `${sh.donor}: ${bytes(sh.bytes)}, ${sh.seconds.toFixed(2)} s`)
        )
      )
      if (bw > 60) g.append(svg('text', { x: x + 4, y: y + 15, class: 'inbar' }, `${sh.donor} ${bytes(sh.bytes)}`))
      x += bw
    }
    g.append(
      svg(
        'text',
        { x: x + 6, y: y + 15, class: 'label' },
        `${m.seconds.toFixed(2)} s · price ${m.price.toPrecision(3)}`
      )
    )
  })
  const donors = el(
    'table',
    {},
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        ...['donor', 'holds of what is missing', 'bandwidth', 'price/GB', 'LP share'].map(h => el('th', {}, h))
      )
    ),
    el(
      'tbody',
      {},
      ...p.donors.map(d =>
        el(
          'tr',
          { 'data-donor': d.id },
          el('td', {}, d.id),
          fig('holdsBytes', d.holdsBytes, bytes(d.holdsBytes)),
          el('td', { class: 'num' }, `${bytes(d.bandwidthBps)}/s`),
          el('td', { class: 'num' }, d.pricePerGB.toPrecision(3)),
          fig(
            'share',
            p.plan.shares.find(x => x.donor === d.id)?.bytes ?? 0,
            bytes(p.plan.shares.find(x => x.donor === d.id)?.bytes ?? 0)
          )
        )
      )
    )
  )
  out.replaceChildren(head, g, donors)
}

/** The charts' samples: all of them with a full state, else the latest appended (at most 300). */
let samples = []
function merge(s) {
  if (s.historyFull) samples = s.history
  else for (const p of s.history) if (!samples.length || p.t > samples[samples.length - 1].t) samples.push(p)
  if (samples.length > 300) samples = samples.slice(-300)
  s.history = samples
}

function draw(s) {
  merge(s)
  state = s
  $('host').textContent = s.hostId
  $('time').textContent = new Date(s.time).toLocaleTimeString()
  pickers(s)
  overview(s)
  images(s)
  holders(s)
  hosts(s)
  similarity(s)
  charts(s)
  document.body.dataset.drawn = s.time
}

function connect() {
  const es = new EventSource('/api/events')
  es.addEventListener('state', e => {
    $('live').textContent = 'live'
    $('live').className = 'live on'
    draw(JSON.parse(e.data))
  })
  es.onerror = () => {
    $('live').textContent = 'reconnecting'
    $('live').className = 'live off'
  }
}

$('chart-image-pick').addEventListener('change', e => {
  picked = e.target.value
  if (state) charts(state)
})
$('plan-form').addEventListener('submit', ev => void plan(ev))
connect()
