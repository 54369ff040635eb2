'use strict';
// The review viewer: a small canvas pan/zoom written for this tool rather
// than a vendored library (OpenSeadragon et al.). The server cuts a plain
// z/x/y tile pyramid, detections must be drawn and hit-tested in the same
// transform as the tiles, and keyboard review needs full control of the
// events; a few hundred lines do that with no third-party code to vendor,
// licence and keep up to date.
(function () {
  const canvas = document.getElementById('view');
  const ctx = canvas.getContext('2d');
  const $ = (id) => document.getElementById(id);
  const COLORS = { pending: '#ffc400', accepted: '#1a9850', rejected: '#d73027', added: '#00b7ff' };
  const RADIUS_PX = 30; // drawn radius in image pixels (about 7.5 µm at 0.25 µm/px)

  let info = null;
  let state = null;
  const view = { cx: 0, cy: 0, scale: 1 }; // image point at the canvas centre; screen px per image px
  const tiles = new Map();
  let selected = null;
  let mouse = null; // last pointer position, canvas CSS px
  let drag = null;
  let inflight = 0;
  const loading = new Set(); // tiles requested and not yet loaded (or failed)
  let filterTimer = null;

  async function api(method, path, body) {
    inflight++;
    try {
      const opts = { method, headers: {} };
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
      const resp = await fetch(path, opts);
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      return data;
    } finally {
      inflight--;
    }
  }

  function status(text, isError) {
    const el = $('status');
    el.textContent = text;
    el.className = isError ? 'error' : '';
  }

  function size() {
    const r = canvas.getBoundingClientRect();
    return { w: r.width, h: r.height };
  }

  function toScreen(x, y) {
    const s = size();
    return { x: (x - view.cx) * view.scale + s.w / 2, y: (y - view.cy) * view.scale + s.h / 2 };
  }

  function toImage(sx, sy) {
    const s = size();
    return { x: (sx - s.w / 2) / view.scale + view.cx, y: (sy - s.h / 2) / view.scale + view.cy };
  }

  function minScale() {
    const s = size();
    return Math.min(s.w / info.width, s.h / info.height) * 0.5;
  }

  function fit() {
    const s = size();
    view.scale = Math.min(s.w / info.width, s.h / info.height) * 0.95;
    view.cx = info.width / 2;
    view.cy = info.height / 2;
    draw();
  }

  function zoomAt(factor, sx, sy) {
    const before = toImage(sx, sy);
    view.scale = Math.max(minScale(), Math.min(8, view.scale * factor));
    const after = toImage(sx, sy);
    view.cx += before.x - after.x;
    view.cy += before.y - after.y;
    draw();
  }

  function tile(z, col, row) {
    const key = z + '/' + col + '/' + row;
    let t = tiles.get(key);
    if (!t) {
      t = new Image();
      loading.add(key);
      t.onload = () => { loading.delete(key); draw(); };
      t.onerror = () => { loading.delete(key); };
      t.src = '/tile/' + key + '.jpg';
      tiles.set(key, t);
    }
    return t.complete && t.naturalWidth > 0 ? t : null;
  }

  function drawLevel(z) {
    const ts = info.tile_size * Math.pow(2, z); // image px per tile
    const s = size();
    const a = toImage(0, 0);
    const b = toImage(s.w, s.h);
    const cols = Math.ceil(info.width / ts);
    const rows = Math.ceil(info.height / ts);
    const c0 = Math.max(0, Math.floor(a.x / ts));
    const c1 = Math.min(cols - 1, Math.floor(b.x / ts));
    const r0 = Math.max(0, Math.floor(a.y / ts));
    const r1 = Math.min(rows - 1, Math.floor(b.y / ts));
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const img = tile(z, c, r);
        if (!img) continue;
        const p = toScreen(c * ts, r * ts);
        const k = Math.pow(2, z) * view.scale;
        // +0.5 px hides seams between neighbouring tiles.
        ctx.drawImage(img, p.x, p.y, img.naturalWidth * k + 0.5, img.naturalHeight * k + 0.5);
      }
    }
  }

  function visible(item) {
    if (item.origin !== 'detector' || item.decision !== 'pending') return true;
    return item.score === null || item.score >= state.min_score;
  }

  function colorOf(item) {
    if (item.decision === 'rejected') return COLORS.rejected;
    if (item.origin === 'added') return COLORS.added;
    return COLORS[item.decision];
  }

  function draw() {
    if (!info) return;
    const dpr = window.devicePixelRatio || 1;
    const s = size();
    if (canvas.width !== Math.round(s.w * dpr) || canvas.height !== Math.round(s.h * dpr)) {
      canvas.width = Math.round(s.w * dpr);
      canvas.height = Math.round(s.h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#333';
    ctx.fillRect(0, 0, s.w, s.h);
    // The one-tile top level first: a blurry background while finer tiles load.
    drawLevel(info.max_level);
    const z = Math.max(0, Math.min(info.max_level, Math.floor(Math.log2(1 / view.scale))));
    if (z < info.max_level) drawLevel(z);
    if (!state) return;
    const r = Math.max(8, RADIUS_PX * view.scale);
    for (const item of state.items) {
      if (!visible(item)) continue;
      const p = toScreen(item.x, item.y);
      if (p.x < -r || p.y < -r || p.x > s.w + r || p.y > s.h + r) continue;
      const isSel = item.id === selected;
      ctx.setLineDash(item.decision === 'rejected' ? [5, 4] : []);
      if (isSel) {
        ctx.lineWidth = 6;
        ctx.strokeStyle = '#fff';
        ctx.beginPath();
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
        ctx.stroke();
      }
      ctx.lineWidth = isSel ? 3.5 : 2.5;
      ctx.strokeStyle = colorOf(item);
      ctx.beginPath();
      ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.stroke();
      if (item.score !== null && (isSel || view.scale >= 0.5)) {
        ctx.setLineDash([]);
        ctx.font = '12px system-ui, sans-serif';
        ctx.fillStyle = '#000';
        ctx.fillText(item.score.toFixed(2), p.x + r * 0.75 + 1, p.y - r * 0.75 + 1);
        ctx.fillStyle = '#fff';
        ctx.fillText(item.score.toFixed(2), p.x + r * 0.75, p.y - r * 0.75);
      }
    }
    ctx.setLineDash([]);
  }

  function byId(id) {
    return state.items.find((i) => i.id === id) || null;
  }

  function updatePanel() {
    const s = state.summary;
    $('count').textContent = s.count;
    $('score').textContent = s.mitotic_score === null ? '–' : s.mitotic_score;
    $('density').textContent = s.area_mm2 === null
      ? 'Give --mpp for density and score.'
      : s.density_per_mm2.toFixed(1) + ' per mm² over ' + s.area_mm2.toFixed(3) + ' mm² (score: 10 HPF = 2 mm²)';
    $('n-accepted').textContent = s.accepted;
    $('n-rejected').textContent = s.rejected;
    $('n-pending').textContent = s.pending_shown + ' / ' + s.pending;
    $('n-added').textContent = s.added;
    $('min-score').value = state.min_score;
    $('min-score-value').textContent = Number(state.min_score).toFixed(2);
    const item = selected === null ? null : byId(selected);
    $('selected').textContent = item
      ? '#' + item.id + ' at (' + item.x.toFixed(0) + ', ' + item.y.toFixed(0) + ')' +
        (item.score === null ? ' (added)' : ', score ' + item.score.toFixed(3)) + ': ' + item.decision
      : 'Nothing selected.';
    document.body.dataset.count = s.count;
  }

  function render() {
    updatePanel();
    draw();
  }

  async function change(path, body, message) {
    try {
      const s = await api('POST', path, body);
      state = s;
      render();
      status(message + ' · saved');
      return s;
    } catch (e) {
      status(String(e.message || e), true);
      return null;
    }
  }

  function decide(decision) {
    if (selected === null) {
      status('Select a detection first (click it, or space for the next undecided).', true);
      return;
    }
    change('/api/decide', { id: selected, decision }, '#' + selected + ' ' + decision);
  }

  async function addAt(sx, sy) {
    const p = toImage(sx, sy);
    const s = await change('/api/add', { x: Math.round(p.x * 100) / 100, y: Math.round(p.y * 100) / 100 }, 'added');
    if (s && s.added !== undefined) {
      selected = s.added;
      render();
    }
  }

  function undecided() {
    return state.items
      .filter((i) => i.origin === 'detector' && i.decision === 'pending' && visible(i))
      .sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity) || a.id - b.id);
  }

  function step(dir) {
    const list = undecided();
    if (list.length === 0) {
      status('No undecided detections above the score filter.');
      return;
    }
    const all = state.items.filter((i) => i.origin === 'detector' && visible(i))
      .sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity) || a.id - b.id);
    let start = all.findIndex((i) => i.id === selected);
    let pick = null;
    for (let k = 1; k <= all.length && start >= 0; k++) {
      const cand = all[(start + dir * k + all.length * k) % all.length];
      if (cand.decision === 'pending') { pick = cand; break; }
    }
    if (!pick) pick = dir > 0 ? list[0] : list[list.length - 1];
    select(pick.id, true);
  }

  function select(id, center) {
    selected = id;
    const item = id === null ? null : byId(id);
    if (item && center) {
      view.cx = item.x;
      view.cy = item.y;
      if (view.scale < 0.5) view.scale = 1;
    }
    render();
  }

  function nearest(sx, sy) {
    let best = null;
    let bestD = Math.max(14, RADIUS_PX * view.scale);
    for (const item of state.items) {
      if (!visible(item)) continue;
      const p = toScreen(item.x, item.y);
      const d = Math.hypot(p.x - sx, p.y - sy);
      if (d <= bestD) { best = item; bestD = d; }
    }
    return best;
  }

  function local(e) {
    const r = canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  canvas.addEventListener('mousedown', (e) => {
    canvas.focus();
    const p = local(e);
    drag = { x: p.x, y: p.y, cx: view.cx, cy: view.cy, moved: false };
  });
  window.addEventListener('mousemove', (e) => {
    const p = local(e);
    mouse = p;
    if (!drag) return;
    if (Math.hypot(p.x - drag.x, p.y - drag.y) > 3) drag.moved = true;
    if (drag.moved) {
      view.cx = drag.cx - (p.x - drag.x) / view.scale;
      view.cy = drag.cy - (p.y - drag.y) / view.scale;
      draw();
    }
  });
  window.addEventListener('mouseup', (e) => {
    if (!drag) return;
    const wasClick = !drag.moved;
    drag = null;
    if (!wasClick || !state) return;
    const p = local(e);
    if (e.shiftKey || e.altKey || e.ctrlKey || e.metaKey) {
      addAt(p.x, p.y);
    } else {
      const hit = nearest(p.x, p.y);
      select(hit ? hit.id : null, false);
    }
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const p = local(e);
    zoomAt(Math.exp(-e.deltaY * 0.0015), p.x, p.y);
  }, { passive: false });
  window.addEventListener('resize', () => draw());

  window.addEventListener('keydown', (e) => {
    if (!state || e.target.tagName === 'INPUT' && e.target.type !== 'range') return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const s = size();
    switch (e.key) {
      case 'a': decide('accepted'); break;
      case 'r': decide('rejected'); break;
      case 'u': decide('pending'); break;
      case 'n': {
        const p = mouse && mouse.x >= 0 && mouse.y >= 0 && mouse.x < s.w && mouse.y < s.h ? mouse : { x: s.w / 2, y: s.h / 2 };
        addAt(p.x, p.y);
        break;
      }
      case ' ': case 'j': step(1); break;
      case 'k': step(-1); break;
      case '+': case '=': zoomAt(1.5, s.w / 2, s.h / 2); break;
      case '-': zoomAt(1 / 1.5, s.w / 2, s.h / 2); break;
      case '0': case 'f': fit(); break;
      case 'Escape': select(null, false); break;
      default: return;
    }
    e.preventDefault();
  });

  $('min-score').addEventListener('input', (e) => {
    const v = Number(e.target.value);
    state.min_score = v;
    $('min-score-value').textContent = v.toFixed(2);
    draw();
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => change('/api/filter', { min_score: v }, 'filter ≥ ' + v.toFixed(2)), 150);
  });
  $('accept').addEventListener('click', () => decide('accepted'));
  $('reject').addEventListener('click', () => decide('rejected'));
  $('undo').addEventListener('click', () => decide('pending'));
  $('next').addEventListener('click', () => step(1));
  $('fit').addEventListener('click', () => fit());

  // Hooks for the end-to-end test (and the curious): read-only views plus the
  // image -> page coordinate map, so a test can point at a known pixel.
  window.mitoscope = {
    ready: false,
    inflight: () => inflight,
    loading: () => loading.size,
    loadingTiles: () => Array.from(loading),
    state: () => state,
    selected: () => selected,
    pageFromImage: (x, y) => {
      const r = canvas.getBoundingClientRect();
      const p = toScreen(x, y);
      return { x: p.x + r.left, y: p.y + r.top };
    },
  };

  (async function init() {
    try {
      info = await api('GET', '/api/info');
      $('image-name').textContent = info.file + ' · ' + info.width + ' × ' + info.height + ' px' +
        (info.mpp ? ' · ' + info.mpp + ' µm/px' : '');
      $('decisions-file').textContent = info.decisions;
      document.title = info.image + ' · Mitoscope review';
      state = await api('GET', '/api/state');
      fit();
      render();
      window.mitoscope.ready = true;
      document.body.dataset.ready = '1';
      status(state.items.length + ' items loaded');
    } catch (e) {
      status('Could not load: ' + (e.message || e), true);
    }
  })();
})();
