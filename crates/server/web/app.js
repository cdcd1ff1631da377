// herd's web page: accounts, rooms and live chat against any replica, plus a cluster
// panel when the page is served through `herd cluster`'s balancer.
//
// No framework and no build step; the file is embedded in the binary and served under a
// Content-Security-Policy without 'unsafe-inline', so everything is wired here with
// addEventListener and every text is set with textContent, never parsed as markup.
//
// Stable ids and selectors, for browser tests:
//   #signup-form #signup-username #signup-password #signup-submit #signup-error
//   #login-form  #login-username  #login-password  #login-submit  #login-error
//   #me            who I am: [data-username], [data-session], [data-replica] once logged in
//   #logout        the log-out button (hidden when logged out)
//   #notice        why something happened (logged out, cookies refused, replica died)
//   #auth          the log-in/sign-up section (hidden when logged in)
//   #chat          rooms and messages (hidden when logged out)
//   #rooms         my rooms: li[data-room-id] > button (aria-current="true" on the one picked)
//   #room-name #room-create          create a room (the form is #room-create-form)
//   #room-join-id #room-join         join a room by id (the form is #room-join-form)
//   #room-title #room-id             the room picked
//   #ws-status     the live connection: [data-state] = offline|connecting|live|waiting,
//                  [data-replica] = the replica the socket is on
//   #messages      li[data-seq] for stored messages (data-client-id too), li.pending
//                  for a send not yet acknowledged; .ack inside shows the ack
//   #message-body #message-send      send a message (the form is #message-form)
//   #cluster       the cluster panel, hidden unless GET /_cluster/replicas answers JSON
//   #cluster-replicas tr[data-id]    one row a replica; tr.here served my last request,
//                                    tr.socket holds my WebSocket
//   #cluster .kill[data-id] #cluster .drain[data-id] #cluster-add
//   #served-by     li a recent request: [data-replica] [data-path] [data-status]
//
// How the session works: login asks for cookies, so the credentials live in HttpOnly
// cookies the page never sees; the body's csrf_token is kept in sessionStorage and sent
// as X-CSRF-Token on every POST. On a 401 the page tries one refresh (cookie-based) and
// retries; a refresh that fails (or is not supported, under server-side sessions) means
// logged out.
//
// How live chat resumes: the page remembers the last seq it showed for the room picked.
// Whenever the socket closes for a reason that is not "logged out", it reconnects to the
// same origin (behind the balancer: any replica) with backoff and subscribes `since` that
// seq; messages at or below it are dropped, so there is no gap and no duplicate. Sends
// not yet acknowledged are sent again with the same client_id, which the server makes
// idempotent.

'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const CSRF_KEY = 'herd.csrf';
  const SERVED_KEEP = 20;
  // A 401 this soon after the page killed a replica is most likely that kill's doing.
  const KILL_BLAME_MS = 10000;
  const HISTORY_SHOWN = 200;

  const state = {
    csrf: sessionStorage.getItem(CSRF_KEY) || cookie('herd_csrf'),
    me: null,
    rooms: [],
    // The room picked: {id, name, lastSeq, loaded, subscribed}.
    room: null,
    // Bumped on every room switch, so a history load for a room left meanwhile is ignored.
    roomGeneration: 0,
    ws: null,
    wsReady: false,
    wsReplica: null,
    reconnectTimer: null,
    reconnectAttempts: 0,
    // Why the page itself is closing the socket ('reauth', 'logout'), if it is.
    closingFor: null,
    // Sends not yet acknowledged: client_id -> {room, body, li}.
    pending: new Map(),
    // My sends shown before their message came back with a seq: client_id -> li.
    placeholders: new Map(),
    refreshing: null,
    served: [],
    lastKillAt: 0,
    cluster: false,
    clusterTimer: null,
    lastReplica: null,
  };

  function cookie(name) {
    for (const part of document.cookie.split(';')) {
      const [k, ...v] = part.trim().split('=');
      if (k === name) return v.join('=');
    }
    return null;
  }

  function setCsrf(token) {
    state.csrf = token;
    if (token) sessionStorage.setItem(CSRF_KEY, token);
    else sessionStorage.removeItem(CSRF_KEY);
  }

  // ---- notices -------------------------------------------------------------------

  function notice(text, bad) {
    const el = $('notice');
    el.textContent = text || '';
    el.hidden = !text;
    el.classList.toggle('bad', Boolean(bad));
  }

  function showError(id, text) {
    const el = $(id);
    el.textContent = text || '';
    el.hidden = !text;
  }

  // A problem+json body's most useful words.
  function problemText(res) {
    const b = res.body;
    if (b && typeof b === 'object') {
      if (Array.isArray(b.errors) && b.errors.length) {
        return b.errors.map((e) => `${e.field} ${e.message}`).join('; ');
      }
      if (b.detail) return b.detail;
      if (b.title) return b.title;
    }
    return res.status ? `HTTP ${res.status}` : 'the server could not be reached';
  }

  // ---- HTTP ----------------------------------------------------------------------

  // Records which replica served a request (the x-herd-replica header).
  function served(method, path, status, replica) {
    state.served.unshift({ at: new Date(), method, path, status, replica });
    state.served.length = Math.min(state.served.length, SERVED_KEEP);
    if (replica) state.lastReplica = replica;
    renderServed();
  }

  // One request. Resolves to {status, ok, body, replica}; status 0 when the network
  // failed. A 401 gets one refresh and one retry unless `retry` is false.
  async function api(method, path, body, { retry = true } = {}) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && state.csrf) headers['x-csrf-token'] = state.csrf;
    // The cluster's admin API refuses actions without it (DNS-rebinding defence).
    if (path.startsWith('/_cluster/')) headers['x-herd-admin'] = '1';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      served(method, path, 0, null);
      return { status: 0, ok: false, body: null, replica: null };
    }
    const replica = response.headers.get('x-herd-replica');
    served(method, path, response.status, replica);
    let parsed = null;
    const type = response.headers.get('content-type') || '';
    if (type.includes('json')) {
      try { parsed = await response.json(); } catch (e) { parsed = null; }
    }
    const res = { status: response.status, ok: response.ok, body: parsed, replica };
    if (res.status === 401 && retry && !path.startsWith('/v1/auth/')) {
      if (await refresh()) return api(method, path, body, { retry: false });
      loggedOut(logoutReason());
    }
    return res;
  }

  // Trades the refresh cookie for new cookies. One refresh at a time: requests that fail
  // together wait for the same one (a second use of a spent refresh token is treated as
  // theft after a grace window).
  function refresh() {
    if (!state.refreshing) {
      state.refreshing = (async () => {
        const res = await api('POST', '/v1/auth/refresh', {}, { retry: false });
        if (res.ok && res.body && res.body.csrf_token) {
          setCsrf(res.body.csrf_token);
          return true;
        }
        return false;
      })().finally(() => { state.refreshing = null; });
    }
    return state.refreshing;
  }

  function logoutReason() {
    if (Date.now() - state.lastKillAt < KILL_BLAME_MS) {
      return 'You were logged out, most likely because the replica holding your session ' +
        'died: server-memory sessions die with their process. (Under --sessions token a ' +
        'replica can die without logging anyone out.)';
    }
    return 'Your session ended (expired, logged out elsewhere, or not accepted here). Log in again.';
  }

  // ---- accounts ------------------------------------------------------------------

  async function login(username, password) {
    const res = await api('POST', '/v1/auth/login', { username, password, cookies: true });
    if (!res.ok) return problemText(res);
    setCsrf(res.body.csrf_token);
    const me = await api('GET', '/v1/me', undefined, { retry: false });
    if (me.status === 401) {
      return 'Logged in, but the next request was refused. Either the browser did not ' +
        'keep the session cookies (they are Secure unless the server runs with ' +
        '--insecure-cookies: use https, or that flag on plain http), or the session ' +
        'lives in another replica\'s memory (--sessions memory needs sticky routing).';
    }
    if (!me.ok) return problemText(me);
    loggedIn(me.body, me.replica);
    return null;
  }

  function loggedIn(me, replica) {
    state.me = me;
    notice('');
    renderMe(replica);
    $('auth').hidden = true;
    $('chat').hidden = false;
    $('logout').hidden = false;
    loadRooms();
    connect();
  }

  function renderMe(replica) {
    const el = $('me');
    el.replaceChildren();
    if (!state.me) {
      el.textContent = 'Not logged in';
      delete el.dataset.username;
      return;
    }
    el.dataset.username = state.me.username;
    el.dataset.session = state.me.session_id;
    el.dataset.replica = replica || state.me.replica || '';
    const name = document.createElement('strong');
    name.textContent = state.me.username;
    el.append('Logged in as ', name,
      ` · session ${String(state.me.session_id).slice(0, 8)}…`,
      ` · served by ${el.dataset.replica || '?'}`);
  }

  // Forgets everything about the session; `why` is shown when given.
  function loggedOut(why) {
    const wasIn = Boolean(state.me);
    state.me = null;
    setCsrf(null);
    disconnect('logout');
    state.pending.clear();
    state.rooms = [];
    leaveRoom();
    renderRooms();
    renderMe();
    $('auth').hidden = false;
    $('chat').hidden = true;
    $('logout').hidden = true;
    if (why && wasIn) notice(why, true);
  }

  async function whoAmI() {
    const res = await api('GET', '/v1/me');
    if (res.ok) {
      state.me = res.body;
      renderMe(res.replica);
    }
    return res;
  }

  // ---- rooms ---------------------------------------------------------------------

  async function loadRooms() {
    const res = await api('GET', '/v1/rooms');
    if (!res.ok) {
      if (res.status !== 401) showError('rooms-error', problemText(res));
      return;
    }
    state.rooms = res.body.rooms || [];
    renderRooms();
    if (!state.room && state.rooms.length) pickRoom(state.rooms[0]);
  }

  function renderRooms() {
    const list = $('rooms');
    list.replaceChildren();
    for (const room of state.rooms) {
      const li = document.createElement('li');
      li.dataset.roomId = room.id;
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = room.name + ' ';
      const seq = document.createElement('span');
      seq.className = 'seq';
      seq.textContent = `#${room.last_seq}`;
      button.append(seq);
      button.setAttribute('aria-current', String(Boolean(state.room && state.room.id === room.id)));
      button.addEventListener('click', () => pickRoom(room));
      li.append(button);
      list.append(li);
    }
    $('rooms-empty').hidden = state.rooms.length > 0;
  }

  function leaveRoom() {
    const room = state.room;
    if (room && room.subscribed && state.wsReady) {
      sendFrame({ type: 'unsubscribe', room: room.id });
    }
    state.room = null;
    state.roomGeneration += 1;
    state.placeholders.clear();
    $('messages').replaceChildren();
    $('room-title').textContent = 'Pick a room';
    $('room-id').textContent = '-';
    $('message-body').disabled = true;
    $('message-send').disabled = true;
  }

  // Shows a room: its recent history over HTTP, then live messages over the socket
  // from the last seq the history showed.
  async function pickRoom(room) {
    if (state.room && state.room.id === room.id) return;
    leaveRoom();
    const generation = state.roomGeneration;
    state.room = { id: room.id, name: room.name, lastSeq: 0, loaded: false, subscribed: false };
    $('room-title').textContent = room.name;
    $('room-id').textContent = room.id;
    renderRooms();
    let after = Math.max(0, (room.last_seq || 0) - HISTORY_SHOWN);
    state.room.lastSeq = after;
    for (;;) {
      const res = await api('GET', `/v1/rooms/${encodeURIComponent(room.id)}/messages?after=${after}&limit=500`);
      if (generation !== state.roomGeneration) return;
      if (!res.ok) {
        if (res.status !== 401) showError('rooms-error', problemText(res));
        break;
      }
      for (const m of res.body.messages) showMessage(m);
      if (res.body.messages.length < 500) break;
      after = res.body.next_after;
    }
    state.room.loaded = true;
    $('message-body').disabled = false;
    $('message-send').disabled = false;
    subscribe();
  }

  // ---- messages ------------------------------------------------------------------

  function time(unix) {
    const d = unix ? new Date(unix * 1000) : new Date();
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function fillMessage(li, m) {
    li.replaceChildren();
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = m.seq ? `#${m.seq} ${time(m.created_at)}` : time();
    const author = document.createElement('span');
    author.className = 'author';
    author.textContent = m.author || (state.me && state.me.username) || '';
    const body = document.createElement('span');
    body.className = 'body';
    body.textContent = m.body;
    const ack = document.createElement('span');
    ack.className = 'ack';
    li.append(meta, author, body, ack);
    li.classList.toggle('mine', Boolean(state.me && m.author_id === state.me.user_id));
  }

  // Shows a stored message once: one at or below the last seq shown is a duplicate.
  function showMessage(m) {
    const room = state.room;
    if (!room || m.room !== room.id || m.seq <= room.lastSeq) return;
    room.lastSeq = m.seq;
    const list = $('messages');
    const mine = Boolean(state.me && m.author_id === state.me.user_id);
    let li = mine ? state.placeholders.get(m.client_id) : null;
    // The ack may have come first: keep what it said.
    const ackText = li ? li.querySelector('.ack').textContent : '';
    if (li) state.placeholders.delete(m.client_id);
    else li = document.createElement('li');
    fillMessage(li, m);
    li.dataset.seq = m.seq;
    li.dataset.clientId = m.client_id;
    li.classList.remove('pending');
    if (ackText && !state.pending.has(m.client_id)) li.querySelector('.ack').textContent = ackText;
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
    // Stored messages go in seq order, above my sends still waiting for theirs.
    list.insertBefore(li, list.querySelector('li.placeholder'));
    li.classList.remove('placeholder');
    const known = state.rooms.find((r) => r.id === m.room);
    if (known && known.last_seq < m.seq) {
      known.last_seq = m.seq;
      // In place: rebuilding the list would take the keyboard focus away.
      const seq = $('rooms').querySelector(`li[data-room-id="${CSS.escape(m.room)}"] .seq`);
      if (seq) seq.textContent = `#${m.seq}`;
    }
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function send(bodyText) {
    const room = state.room;
    if (!room) return;
    const clientId = crypto.randomUUID();
    const li = document.createElement('li');
    fillMessage(li, { body: bodyText });
    li.className = 'pending placeholder mine';
    li.dataset.clientId = clientId;
    li.querySelector('.ack').textContent = 'sending…';
    $('messages').append(li);
    $('messages').scrollTop = $('messages').scrollHeight;
    state.pending.set(clientId, { room: room.id, body: bodyText, li });
    state.placeholders.set(clientId, li);
    if (state.wsReady) sendPending(clientId);
  }

  function sendPending(clientId) {
    const p = state.pending.get(clientId);
    if (!p) return;
    sendFrame({ type: 'send', room: p.room, body: p.body, client_id: clientId });
  }

  function acked(frame) {
    const p = state.pending.get(frame.client_id);
    if (!p) return;
    state.pending.delete(frame.client_id);
    const text = `✓ stored as #${frame.seq}${frame.duplicate ? ' (retry, kept once)' : ''}`;
    p.li.querySelector('.ack').textContent = text;
    p.li.dataset.ackSeq = frame.seq;
    p.li.classList.remove('pending');
    // The message itself comes over the subscription and takes the placeholder's place.
    // If it was already shown without it (say, in the history of a reload), the
    // placeholder goes and the shown one gets the ack.
    if (state.placeholders.has(frame.client_id) && state.room && frame.seq <= state.room.lastSeq) {
      state.placeholders.delete(frame.client_id);
      p.li.remove();
      const shown = $('messages').querySelector(`li[data-seq="${Number(frame.seq)}"] .ack`);
      if (shown) shown.textContent = text;
    }
  }

  function sendFailed(frame) {
    const p = state.pending.get(frame.client_id);
    if (!p) return;
    if (frame.code === 'rate-limited' || frame.code === 'unavailable') {
      p.li.querySelector('.ack').textContent = 'retrying…';
      setTimeout(() => { if (state.wsReady) sendPending(frame.client_id); }, 1000);
      return;
    }
    state.pending.delete(frame.client_id);
    state.placeholders.delete(frame.client_id);
    p.li.classList.remove('pending', 'placeholder');
    p.li.classList.add('failed');
    p.li.querySelector('.ack').textContent = `not sent: ${frame.message}`;
  }

  // ---- the live connection -------------------------------------------------------

  function wsStatus(stateName, text) {
    const el = $('ws-status');
    el.dataset.state = stateName;
    el.dataset.replica = state.wsReplica || '';
    el.textContent = text;
    el.classList.toggle('live', stateName === 'live');
    el.classList.toggle('down', stateName === 'waiting');
  }

  function sendFrame(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
    }
  }

  // Opens the socket. The herd_access cookie authenticates it (browsers cannot set
  // headers on a WebSocket), so nothing is sent before `ready`.
  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    if (!state.me || state.ws) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    state.ws = ws;
    state.wsReady = false;
    state.closingFor = null;
    wsStatus('connecting', 'connecting…');
    ws.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    });
    ws.addEventListener('close', (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.wsReady = false;
      if (state.room) state.room.subscribed = false;
      onClose(event.code, event.reason);
    });
  }

  function disconnect(why) {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    const ws = state.ws;
    state.ws = null;
    state.wsReady = false;
    state.wsReplica = null;
    if (ws) {
      state.closingFor = why;
      ws.close(1000, why);
    }
    wsStatus('offline', 'offline');
  }

  function subscribe() {
    const room = state.room;
    if (!room || room.subscribed || !state.wsReady) return;
    // History loading moves lastSeq; subscribing before it finished would let live
    // messages jump ahead of the history still to come (and then drop it as old).
    if (!room.loaded) return;
    sendFrame({ type: 'subscribe', room: room.id, since: room.lastSeq });
    room.subscribed = true;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case 'ready':
        state.wsReady = true;
        state.wsReplica = frame.replica;
        state.reconnectAttempts = 0;
        wsStatus('live', `live on replica ${frame.replica}`);
        subscribe();
        for (const clientId of state.pending.keys()) sendPending(clientId);
        break;
      case 'message':
        showMessage(frame);
        break;
      case 'ack':
        acked(frame);
        break;
      case 'subscribed':
        break;
      case 'error':
        if (frame.client_id) sendFailed(frame);
        else if (frame.code !== 'already-subscribed') showError('rooms-error', frame.message);
        break;
      case 'reauth':
        // The server wants a fresh access token before the current one expires. Ours is
        // in an HttpOnly cookie the page cannot read, so it cannot answer with a reauth
        // frame: it refreshes over HTTP (which sets new cookies), then closes the socket
        // and opens a new one that the new cookie authenticates, resuming from the last
        // seq like any reconnect. If this fails the server closes with 4002 at expiry,
        // which takes the same path.
        refresh().then((ok) => {
          if (ok && state.ws) {
            state.closingFor = 'reauth';
            state.ws.close(1000, 'reauth');
          }
        });
        break;
      default:
        break;
    }
  }

  async function onClose(code, reason) {
    const ours = state.closingFor;
    state.closingFor = null;
    state.wsReplica = null;
    if (ours === 'logout' || !state.me) return;
    if (ours === 'reauth') {
      connect();
      return;
    }
    if (code === 4003) {
      loggedOut('Your session was logged out or revoked. Log in again.');
      return;
    }
    if (code === 4001 || code === 4002) {
      // 4002: the token expired without a reauth. 4001: no valid credential came, for
      // instance because the access cookie expired in the browser. Either way one
      // refresh decides; server-side sessions cannot refresh and end here.
      wsStatus('waiting', 'refreshing the session…');
      if (await refresh()) {
        connect();
      } else {
        loggedOut(code === 4001 ? logoutReason() : 'Your session expired. Log in again.');
      }
      return;
    }
    // 1012 (replica restarting), 4008 (too slow), 1011, and 1006 (the replica died, or
    // refused the upgrade): reconnect, to whichever replica the origin leads to.
    const why = `closed with ${code}${reason ? ` (${reason})` : ''}`;
    scheduleReconnect(code === 1012 && state.reconnectAttempts === 0, why);
  }

  function scheduleReconnect(now, why) {
    const attempt = state.reconnectAttempts;
    state.reconnectAttempts += 1;
    const delay = now ? 0 : Math.min(10000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
    wsStatus('waiting', `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(async () => {
      state.reconnectTimer = null;
      // A socket that fails at the upgrade shows only 1006, so ask over HTTP whether the
      // session still holds (refreshing it if it can) before trying again.
      const res = await whoAmI();
      if (!state.me) return;
      if (res.status === 0 || res.status >= 500) {
        scheduleReconnect(false, 'the server is unreachable');
        return;
      }
      connect();
    }, delay);
  }

  // ---- the cluster panel ---------------------------------------------------------

  async function pollCluster() {
    let res;
    try {
      res = await fetch('/_cluster/replicas', { cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      res = null;
    }
    let body = null;
    if (res && res.ok && (res.headers.get('content-type') || '').includes('json')) {
      try { body = await res.json(); } catch (e) { body = null; }
    }
    const ok = body && Array.isArray(body.replicas);
    if (!state.cluster) {
      // The first answer decides: plain `herd serve` has no /_cluster/ (404).
      if (!ok) return;
      state.cluster = true;
      $('cluster').hidden = false;
      state.clusterTimer = setInterval(pollCluster, 1000);
    }
    $('cluster-status').textContent = ok ? '' : '(balancer unreachable)';
    if (ok) renderCluster(body);
  }

  function renderCluster(body) {
    $('cluster-policy').textContent = body.policy || '-';
    const tbody = $('cluster-replicas');
    const focused = document.activeElement;
    const focusKey = focused && focused.dataset && focused.dataset.id !== undefined
      ? `${focused.className}|${focused.dataset.id}` : null;
    tbody.replaceChildren();
    for (const r of body.replicas) {
      const id = String(r.id);
      const tr = document.createElement('tr');
      tr.dataset.id = id;
      const cells = [id, r.state, r.port, r.pid, r.requests_served];
      cells.forEach((value, i) => {
        const td = document.createElement('td');
        td.textContent = value === undefined || value === null ? '-' : String(value);
        if (i === 1) td.className = `state-${String(r.state).toLowerCase()}`;
        tr.append(td);
      });
      const marks = [];
      if (names(r, state.lastReplica)) {
        tr.classList.add('here');
        marks.push('last request');
      }
      if (names(r, state.wsReplica)) {
        tr.classList.add('socket');
        marks.push('my socket');
      }
      if (marks.length) {
        const mark = document.createElement('span');
        mark.className = 'mark';
        mark.textContent = ` (${marks.join(', ')})`;
        tr.firstChild.append(mark);
      }
      const actions = document.createElement('td');
      actions.className = 'actions';
      const gone = String(r.state).toLowerCase() === 'dead';
      actions.append(
        actionButton('Kill', 'kill danger', id, gone, () => killReplica(id)),
        actionButton('Drain', 'drain secondary', id, gone, () => clusterPost(`/_cluster/replicas/${encodeURIComponent(id)}/drain`)),
      );
      tr.append(actions);
      tbody.append(tr);
    }
    // Rows are rebuilt every second: keep the keyboard where it was.
    if (focusKey) {
      for (const b of tbody.querySelectorAll('button')) {
        if (`${b.className}|${b.dataset.id}` === focusKey) b.focus();
      }
    }
  }

  function actionButton(label, className, id, disabled, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.dataset.id = id;
    b.textContent = label;
    b.disabled = disabled;
    b.setAttribute('aria-label', `${label} replica ${id}`);
    b.addEventListener('click', onClick);
    return b;
  }

  // Whether a replica id as a response names it: that id is --replica-id, which the
  // cluster may set to the replica's id or leave as host:port.
  function names(r, seen) {
    if (!seen) return false;
    return seen === String(r.id) || (r.port !== undefined && seen.endsWith(`:${r.port}`));
  }

  async function clusterPost(path) {
    const res = await api('POST', path, undefined, { retry: false });
    if (!res.ok) notice(`${path}: ${problemText(res)}`, true);
    pollCluster();
    return res;
  }

  async function killReplica(id) {
    state.lastKillAt = Date.now();
    await clusterPost(`/_cluster/replicas/${encodeURIComponent(id)}/kill`);
    // Ask at once whether the session survived, rather than at the next click: under
    // token sessions it does; under server-memory sessions held by that replica it
    // does not, and the notice says why.
    if (state.me) setTimeout(() => { if (state.me) whoAmI(); }, 500);
  }

  function renderServed() {
    const list = $('served-by');
    if (!state.cluster) return;
    list.replaceChildren();
    for (const s of state.served) {
      const li = document.createElement('li');
      li.dataset.replica = s.replica || '';
      li.dataset.path = s.path;
      li.dataset.status = s.status;
      li.textContent = `${s.at.toLocaleTimeString()} ${s.method} ${s.path} → ${s.status || 'network error'} by ${s.replica || '(none)'}`;
      if (!s.status || s.status >= 400) li.classList.add('bad');
      list.append(li);
    }
  }

  // ---- wiring --------------------------------------------------------------------

  function onSubmit(formId, handler) {
    $(formId).addEventListener('submit', async (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      const buttons = form.querySelectorAll('button');
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await handler(form);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
  }

  onSubmit('login-form', async () => {
    showError('login-error', '');
    const error = await login($('login-username').value.trim(), $('login-password').value);
    if (error) showError('login-error', error);
    else $('login-password').value = '';
  });

  onSubmit('signup-form', async () => {
    showError('signup-error', '');
    const username = $('signup-username').value.trim();
    const password = $('signup-password').value;
    const res = await api('POST', '/v1/auth/signup', { username, password });
    if (!res.ok) {
      showError('signup-error', problemText(res));
      return;
    }
    const error = await login(username, password);
    if (error) showError('signup-error', error);
    else $('signup-password').value = '';
  });

  $('logout').addEventListener('click', async () => {
    await api('POST', '/v1/auth/logout', undefined, { retry: false });
    loggedOut();
    notice('You logged out.');
  });

  onSubmit('room-create-form', async () => {
    showError('rooms-error', '');
    const res = await api('POST', '/v1/rooms', { name: $('room-name').value });
    if (!res.ok) {
      showError('rooms-error', problemText(res));
      return;
    }
    $('room-name').value = '';
    state.rooms.push(res.body);
    renderRooms();
    pickRoom(res.body);
  });

  onSubmit('room-join-form', async () => {
    showError('rooms-error', '');
    const id = $('room-join-id').value.trim();
    const res = await api('POST', `/v1/rooms/${encodeURIComponent(id)}/join`);
    if (!res.ok) {
      showError('rooms-error', problemText(res));
      return;
    }
    $('room-join-id').value = '';
    const rooms = await api('GET', '/v1/rooms');
    if (rooms.ok) {
      state.rooms = rooms.body.rooms || [];
      renderRooms();
      const room = state.rooms.find((r) => r.id === id);
      if (room) pickRoom(room);
    }
  });

  $('cluster-add').addEventListener('click', () => clusterPost('/_cluster/replicas'));

  $('message-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('message-body');
    const text = input.value;
    if (!text.trim()) return;
    input.value = '';
    send(text);
    input.focus();
  });

  // On load: a session that survived a reload (its cookies are still there) resumes.
  async function start() {
    pollCluster();
    const res = await api('GET', '/v1/me', undefined, { retry: false });
    if (res.ok) {
      loggedIn(res.body, res.replica);
    } else if (res.status === 401 && state.csrf && await refresh()) {
      const again = await api('GET', '/v1/me', undefined, { retry: false });
      if (again.ok) loggedIn(again.body, again.replica);
    }
  }

  start();
})();
