// The Vigil console: the newest events from GET /api/events, then every new one live over
// /ws, resuming with since=<last id> after a pause, a dropped network or a server restart so
// that each event shows exactly once. No framework, no build step: the server serves this file
// as it is, under a Content-Security-Policy that allows nothing but this origin.
'use strict';

(() => {
  const LEVELS = ['INFO', 'WARN', 'ERROR', 'CRITICAL'];
  // Shapes as well as colours, so a level reads without colour.
  const ICONS = { INFO: '●', WARN: '▲', ERROR: '✖', CRITICAL: '‼' };
  const INITIAL_EVENTS = 50;
  const MAX_ROWS = 500;
  const REMEMBERED_IDS = 50000;
  const CHART_SECONDS = 300;
  const PAYLOAD_CHARS = 400;
  const TOKEN_KEY = 'vigil.readToken';

  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $('state'), filters: $('filters'), clear: $('clear'), pause: $('pause'),
    tokenForm: $('token-form'), token: $('token'), tokenProblem: $('token-problem'),
    counters: $('counters'), chart: $('chart'), notice: $('notice'), rows: $('events'),
    empty: $('empty'),
  };

  let filter = readFilter(new URLSearchParams(location.search));
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let socket = null;
  let paused = false;
  // The id of the last event received, in the order the server sent them: where a resume
  // starts. null until the first page of events is loaded.
  let lastId = null;
  let attempts = 0;
  let retryTimer = 0;
  // Bumped by every restart: callbacks of an older socket or fetch see it changed and stop.
  let generation = 0;
  let replayNote = null;
  const shown = new Set();
  const shownOrder = [];
  // Rows waiting for the next frame: the table is updated once per frame, however fast events
  // come, and not at all while the page is hidden (the counts still are).
  let pending = [];
  let flushing = false;
  const counts = Object.fromEntries(LEVELS.map((level) => [level, 0]));
  const perSecond = new Map();

  // --- filters, in the page's URL ---------------------------------------------------------

  function readFilter(params) {
    const list = (name) => (params.get(name) || '').split(',').map((v) => v.trim()).filter(Boolean);
    return { type: list('type'), level: list('level'), source: list('source') };
  }

  function filterParams() {
    const params = new URLSearchParams();
    for (const name of ['type', 'level', 'source']) {
      if (filter[name].length) params.set(name, filter[name].join(','));
    }
    return params;
  }

  function showFilter() {
    ui.filters.elements.type.value = filter.type.join(',');
    ui.filters.elements.source.value = filter.source.join(',');
    for (const box of ui.filters.querySelectorAll('input[name="level"]')) {
      box.checked = filter.level.includes(box.value);
    }
  }

  ui.filters.addEventListener('submit', (event) => {
    event.preventDefault();
    const form = ui.filters.elements;
    const split = (text) => text.split(',').map((v) => v.trim()).filter(Boolean);
    filter = {
      type: split(form.type.value),
      level: [...ui.filters.querySelectorAll('input[name="level"]:checked')].map((box) => box.value),
      source: split(form.source.value),
    };
    const query = filterParams().toString();
    history.pushState(null, '', query ? `?${query}` : location.pathname);
    restart();
  });

  ui.clear.addEventListener('click', () => {
    filter = readFilter(new URLSearchParams());
    showFilter();
    history.pushState(null, '', location.pathname);
    restart();
  });

  window.addEventListener('popstate', () => {
    filter = readFilter(new URLSearchParams(location.search));
    showFilter();
    restart();
  });

  // --- connection ---------------------------------------------------------------------------

  function setState(state, text) {
    ui.state.dataset.state = state;
    ui.state.textContent = text;
  }

  function note(text) {
    ui.notice.hidden = !text;
    ui.notice.textContent = text || '';
  }

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function closeSocket() {
    if (socket) {
      const old = socket;
      socket = null;
      old.onopen = old.onmessage = old.onclose = null;
      old.close(1000);
    }
    clearTimeout(retryTimer);
  }

  // Starts over: the newest page of events for the filter, then live.
  async function restart() {
    const mine = ++generation;
    closeSocket();
    clearEvents();
    lastId = null;
    attempts = 0;
    note('');
    await load(mine);
  }

  async function load(mine) {
    setState('connecting', 'Loading…');
    const params = filterParams();
    params.set('size', String(INITIAL_EVENTS));
    let response;
    try {
      response = await fetch(`/api/events?${params}`, { headers: authHeaders(), cache: 'no-store' });
    } catch {
      if (mine === generation) retryLater(mine, 'the server cannot be reached');
      return;
    }
    if (mine !== generation) return;
    if (response.status === 401 || response.status === 403) {
      askForToken(response.status === 403);
      return;
    }
    const body = await response.json().catch(() => null);
    if (mine !== generation) return;
    if (!response.ok || !body) {
      if (response.status === 400) {
        setState('offline', 'Filter refused');
        note(body && body.message ? `The filter was refused: ${body.message}` : 'The filter was refused.');
        return;
      }
      retryLater(mine, body && body.message ? body.message : `the server answered ${response.status}`);
      return;
    }
    for (const event of body.items.slice().reverse()) add(event, false);
    lastId = body.items.length ? body.items[0].id : 0;
    connect(mine);
  }

  function connect(mine) {
    if (paused) {
      setState('paused', `Paused after event #${lastId}`);
      return;
    }
    const params = filterParams();
    params.set('since', String(lastId));
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // The token travels as a subprotocol, never in the URL (which ends up in logs).
    const protocols = ['vigil.v1'];
    if (token) protocols.push(`vigil.bearer.${token}`);
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws?${params}`, protocols);
    } catch {
      retryLater(mine, 'the websocket could not be opened');
      return;
    }
    socket = ws;
    let opened = false;
    if (!attempts) setState('connecting', 'Connecting…');
    ws.onopen = () => {
      opened = true;
      attempts = 0;
      setState('live', 'Live');
    };
    ws.onmessage = (message) => {
      if (mine !== generation || socket !== ws) return;
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data && data.resume) {
        resumed(mine, data.resume);
      } else if (data && typeof data.id === 'number') {
        add(data, true);
      }
    };
    ws.onclose = (close) => {
      if (socket !== ws) return;
      socket = null;
      if (mine !== generation || paused) return;
      if (!opened) {
        // A refused upgrade looks like any lost connection: ask the list API why.
        probe(mine);
        return;
      }
      const why = close.code === 1001 ? 'the server is restarting'
        : close.code === 1008 ? 'this page fell behind'
          : 'the connection was lost';
      retryLater(mine, why);
    };
  }

  async function probe(mine) {
    try {
      const response = await fetch('/api/events?size=1', { headers: authHeaders(), cache: 'no-store' });
      if (mine !== generation) return;
      if (response.status === 401 || response.status === 403) {
        askForToken(response.status === 403);
        return;
      }
      retryLater(mine, response.ok ? 'the websocket was refused' : `the server answered ${response.status}`);
    } catch {
      if (mine === generation) retryLater(mine, 'the server cannot be reached');
    }
  }

  function retryLater(mine, why) {
    clearTimeout(retryTimer);
    const delay = Math.min(10000, 500 * 2 ** Math.min(attempts, 5)) * (0.75 + Math.random() * 0.5);
    attempts += 1;
    setState('reconnecting', `Reconnecting in ${Math.ceil(delay / 1000)} s: ${why}`);
    retryTimer = setTimeout(() => {
      if (mine !== generation || paused) return;
      if (lastId === null) load(mine);
      else connect(mine);
    }, delay);
  }

  // The server replayed what this page missed since lastId.
  function resumed(mine, resume) {
    replayNote = replayNote || { since: resume.since, replayed: 0 };
    replayNote.replayed += resume.replayed;
    if (!resume.complete && resume.replayed > 0) {
      // One resume replays at most VIGIL_WS_RESUME_MAX events: go on from the last one.
      note(`Catching up after event #${replayNote.since}: ${replayNote.replayed} replayed so far…`);
      closeSocket();
      connect(mine);
      return;
    }
    const { since, replayed } = replayNote;
    replayNote = null;
    if (resume.complete) {
      if (replayed > 0) note(`Resumed after event #${since}: ${replayed} missed event${replayed === 1 ? '' : 's'} replayed; nothing was lost.`);
    } else {
      note(`Resumed after event #${since}, but the server could not replay what was missed (${replayed} replayed); retrying.`);
      closeSocket();
      retryLater(mine, 'the replay was incomplete');
    }
  }

  // --- pause ------------------------------------------------------------------------------

  function togglePause() {
    paused = !paused;
    ui.pause.setAttribute('aria-pressed', String(paused));
    ui.pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused) {
      closeSocket();
      setState('paused', lastId === null ? 'Paused' : `Paused after event #${lastId}`);
    } else {
      attempts = 0;
      if (lastId === null) load(generation);
      else connect(generation);
    }
  }

  ui.pause.addEventListener('click', togglePause);
  document.addEventListener('keydown', (event) => {
    const typing = event.target instanceof HTMLInputElement && event.target.type !== 'checkbox';
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === 'p') {
      event.preventDefault();
      togglePause();
    } else if (event.key === '/') {
      event.preventDefault();
      ui.filters.elements.type.focus();
    }
  });

  // --- token ------------------------------------------------------------------------------

  function askForToken(wrong) {
    closeSocket();
    setState('token', 'Read token needed');
    ui.tokenForm.hidden = false;
    ui.tokenProblem.textContent = wrong ? 'That token is not accepted.' : '';
    ui.token.focus();
  }

  ui.tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    token = ui.token.value.trim();
    ui.token.value = '';
    sessionStorage.setItem(TOKEN_KEY, token);
    ui.tokenForm.hidden = true;
    restart();
  });

  // --- events -----------------------------------------------------------------------------

  function clearEvents() {
    pending = [];
    ui.rows.replaceChildren();
    shown.clear();
    shownOrder.length = 0;
    perSecond.clear();
    for (const level of LEVELS) counts[level] = 0;
    renderCounters();
    ui.empty.hidden = false;
  }

  function remember(id) {
    shown.add(id);
    shownOrder.push(id);
    if (shownOrder.length > REMEMBERED_IDS) shown.delete(shownOrder.shift());
  }

  function add(event, live) {
    if (live) lastId = event.id;
    if (shown.has(event.id)) return;
    remember(event.id);
    const level = LEVELS.includes(event.level) ? event.level : 'INFO';
    counts[level] += 1;
    const second = Math.floor(Date.parse(event.createdAt) / 1000);
    if (Number.isFinite(second)) {
      const bucket = perSecond.get(second) || Object.fromEntries(LEVELS.map((l) => [l, 0]));
      bucket[level] += 1;
      perSecond.set(second, bucket);
    }
    pending.push([event, level, live]);
    if (pending.length > 2 * MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    if (!flushing) {
      flushing = true;
      requestAnimationFrame(flush);
    }
  }

  function flush() {
    flushing = false;
    const rows = document.createDocumentFragment();
    for (const [event, level, live] of pending.slice(-MAX_ROWS).reverse()) {
      rows.append(row(event, level, live));
    }
    pending = [];
    ui.rows.prepend(rows);
    while (ui.rows.childElementCount > MAX_ROWS) ui.rows.lastElementChild.remove();
    ui.empty.hidden = ui.rows.childElementCount > 0;
    renderCounters();
  }

  function cell(text, className) {
    const td = document.createElement('td');
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function row(event, level, live) {
    const tr = document.createElement('tr');
    tr.dataset.id = String(event.id);
    tr.className = `row-${level}${live ? ' fresh' : ''}`;
    const time = cell(String(event.createdAt).slice(11, 23));
    time.title = `${event.createdAt} · event #${event.id}` + (event.occurredAt ? ` · occurred ${event.occurredAt}` : '');
    const levelCell = document.createElement('td');
    const badge = document.createElement('span');
    badge.className = `lvl level-${level}`;
    const icon = document.createElement('span');
    icon.setAttribute('aria-hidden', 'true');
    icon.textContent = `${ICONS[level]} `;
    badge.append(icon, level);
    levelCell.append(badge);
    let payload = event.payload == null ? '' : JSON.stringify(event.payload);
    const full = payload;
    if (payload.length > PAYLOAD_CHARS) payload = `${payload.slice(0, PAYLOAD_CHARS)}…`;
    const payloadCell = cell(payload, 'payload');
    if (full !== payload) payloadCell.title = full;
    tr.append(time, levelCell, cell(event.type), cell(event.source), payloadCell);
    return tr;
  }

  const countCells = Object.fromEntries(LEVELS.map((level) => {
    const li = document.createElement('li');
    li.className = `level-${level}`;
    li.dataset.level = level;
    const label = document.createElement('span');
    label.textContent = `${ICONS[level]} ${level}`;
    const count = document.createElement('span');
    count.className = 'count';
    li.append(label, count);
    ui.counters.append(li);
    return [level, count];
  }));

  function renderCounters() {
    for (const level of LEVELS) countCells[level].textContent = counts[level].toLocaleString();
  }

  // --- chart: events per second by level, stacked -------------------------------------------

  function drawChart() {
    const canvas = ui.chart;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 720;
    const height = canvas.clientHeight || 120;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const context = canvas.getContext('2d');
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    const now = Math.floor(Date.now() / 1000);
    for (const second of perSecond.keys()) {
      if (second <= now - CHART_SECONDS) perSecond.delete(second);
    }
    let peak = 1;
    for (const bucket of perSecond.values()) {
      peak = Math.max(peak, LEVELS.reduce((sum, level) => sum + bucket[level], 0));
    }
    const style = getComputedStyle(document.documentElement);
    const colours = Object.fromEntries(LEVELS.map((level) => [level, style.getPropertyValue(`--${level.toLowerCase()}`).trim()]));
    const bar = width / CHART_SECONDS;
    for (const [second, bucket] of perSecond) {
      const x = width - (now - second + 1) * bar;
      let y = height;
      for (const level of LEVELS) {
        if (!bucket[level]) continue;
        const h = (bucket[level] / peak) * (height - 14);
        context.fillStyle = colours[level];
        context.fillRect(x, y - h, Math.max(bar - 0.5, 1), h);
        y -= h;
      }
    }
    context.fillStyle = style.getPropertyValue('--muted').trim();
    context.font = '11px system-ui, sans-serif';
    context.fillText(`peak ${peak}/s`, 4, 11);
  }

  showFilter();
  renderCounters();
  setInterval(drawChart, 1000);
  drawChart();
  restart();
})();
