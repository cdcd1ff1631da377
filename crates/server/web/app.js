// herd's web page: accounts, rooms and live chat against any replica, plus a cluster
// panel when the page is served through `herd cluster`'s balancer.
//
// No framework and no build step; the file is embedded in the binary and served under a
// Content-Security-Policy without 'unsafe-inline', so everything is wired here with
// addEventListener and every text is set with textContent, never parsed as markup.
//
// Stable ids and selectors, for browser tests:
//   #guide         "what you are looking at": #guide-steps, #guide-kill and #guide-add say
//                  what to expect under the design the cluster runs ([data-sessions])
//   #signup-form #signup-username #signup-password #signup-submit #signup-error
//   #login-form  #login-username  #login-password  #login-submit  #login-error
//   #me            who I am: [data-username], [data-session], [data-replica] once logged in
//   #logout        the log-out button (hidden when logged out)
//   #notice        why something happened (logged out, cookies refused, replica died)
//   #auth          the log-in/sign-up section (hidden when logged in)
//   #chat          rooms and messages (hidden when logged out)
//   #rooms         my rooms: li[data-room-id] > button (aria-current="true" on the one picked)
//   #room-name #room-create          create a room (the form is #room-create-form),
//                                    its error in #room-create-error
//   #room-join-id #room-join         join a room by id (the form is #room-join-form),
//                                    its error in #room-join-error
//   #room-title #room-id             the room picked
//   #ws-status     the live connection: [data-state] = offline|connecting|live|waiting,
//                  [data-replica] = the replica the socket is on
//   #messages      li[data-seq] for stored messages (data-client-id too), li.pending
//                  for a send not yet acknowledged; .ack inside shows the ack; li.failed
//                  for a refused one, with .retry and .dismiss buttons
//   #message-body #message-send      send a message (the form is #message-form);
//                  #message-count counts characters, #message-error says why not sent
//   #sessions      my login sessions (hidden when logged out, or when the server keeps no
//                  list of them): #sessions-list li[data-session-id] ([data-current]
//                  on this browser's), each other one with an .end button;
//                  #sessions-end-others ends all but this one; #sessions-error
//   #cluster       the cluster panel, hidden unless GET /_cluster/replicas answers JSON
//   #cluster-replicas tr[data-id]    one row a replica, [data-state] as the API says and
//                                    [data-ended] once dead (killed|drained|crashed|stopped),
//                                    [data-traffic] its requests in the window (all users);
//                                    tr.here served my last request, tr.socket holds my
//                                    WebSocket; only the last GONE_SHOWN dead ones get a
//                                    row, the earlier ones are named in #cluster-gone
//   #cluster .kill[data-id] #cluster .drain[data-id] #cluster-add
//   #log           what happened, newest first: li[data-kind="request"] [data-replica]
//                  [data-path] [data-status] [data-count] (repeats merge into one line),
//                  li[data-kind="event"] [data-event] (reconnect, kill, add, drain, ...);
//                  a reconnect carries [data-from] [data-to] [data-since] [data-missed]
//                  [data-duplicated]
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
// idempotent. The log shows each reconnect as an event whose counts of missed and
// duplicated messages are worked out from the seqs the page received after it.
//
// Behind `herd cluster` the page asks GET /v1/me every HEARTBEAT_MS while logged in: the
// header's "served by" stays current, a session that died with its replica is noticed at
// once, and the traffic view shows the page's own requests spreading over the replicas
// (an added one included) even while chat runs over its one socket.

'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const CSRF_KEY = 'herd.csrf';
  const LOG_KEEP = 30;
  const HEARTBEAT_MS = 2000;
  // Dead replicas that keep a row of their own; earlier ones are only named.
  const GONE_SHOWN = 2;
  // The server's limit on a message body, in characters (Unicode scalar values).
  const MAX_BODY_CHARS = 4000;
  // A 401 this soon after the page killed a replica is most likely that kill's doing.
  const KILL_BLAME_MS = 10000;
  const HISTORY_SHOWN = 200;

  const state = {
    csrf: sessionStorage.getItem(CSRF_KEY) || cookie('__Host-herd_csrf') || cookie('herd_csrf'),
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
    log: [],
    lastKillAt: 0,
    cluster: false,
    clusterTimer: null,
    // The admin API's last answer.
    clusterBody: null,
    heartbeatTimer: null,
    lastReplica: null,
    // The design the cluster runs, from its admin API: {sessions, policy}.
    design: null,
    // The socket that closed on its own and is being replaced: {replica, code, at, attempts}.
    lostSocket: null,
    // The reconnect event counting what came after it: {entry, since, expected, received,
    // missed, duplicated}.
    resume: null,
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

  // Records a request in the log, with the replica that served it (x-herd-replica).
  // `expected` marks a refusal that is not a failure (the first load asking whether a
  // session survived). The same request answered the same way again merges into the
  // line before, which counts it and lists every replica that served it.
  function served(method, path, status, replica, expected) {
    if (replica) {
      state.lastReplica = replica;
      renderServedBy();
    }
    const last = state.log[0];
    if (last && last.kind === 'request' && last.method === method && last.path === path
        && last.status === status) {
      last.count += 1;
      last.at = new Date();
      last.replica = replica;
      if (replica && !last.replicas.includes(replica)) last.replicas.push(replica);
    } else {
      addLog({
        kind: 'request', method, path, status, replica, expected, count: 1,
        replicas: replica ? [replica] : [],
      });
    }
    renderLog();
  }

  // Adds an entry to the log, newest first, and returns it (events are updated in
  // place as what follows them comes in).
  function addLog(entry) {
    entry.at = entry.at || new Date();
    state.log.unshift(entry);
    state.log.length = Math.min(state.log.length, LOG_KEEP);
    renderLog();
    return entry;
  }

  function logEvent(event, text, bad, extra) {
    return addLog({ kind: 'event', event, text, bad: Boolean(bad), ...extra });
  }

  // One request. Resolves to {status, ok, body, replica}; status 0 when the network
  // failed. A 401 gets one refresh and one retry unless `retry` is false.
  async function api(method, path, body, { retry = true, expected = false } = {}) {
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
      served(method, path, 0, null, false);
      return { status: 0, ok: false, body: null, replica: null };
    }
    const replica = response.headers.get('x-herd-replica');
    served(method, path, response.status, replica, expected && response.status === 401);
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
  function refresh(expected = false) {
    if (!state.refreshing) {
      state.refreshing = (async () => {
        const res = await api('POST', '/v1/auth/refresh', {}, { retry: false, expected });
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
    loadSessions();
    connect();
    startHeartbeat();
  }

  // See the top of the file: behind a cluster only, and only while the page is seen.
  function startHeartbeat() {
    stopHeartbeat();
    if (!state.cluster || !state.me) return;
    state.heartbeatTimer = setInterval(() => {
      if (state.me && document.visibilityState === 'visible') whoAmI();
    }, HEARTBEAT_MS);
  }

  function stopHeartbeat() {
    clearInterval(state.heartbeatTimer);
    state.heartbeatTimer = null;
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
    el.dataset.replica = replica || state.lastReplica || state.me.replica || '';
    const name = document.createElement('strong');
    name.textContent = state.me.username;
    const by = document.createElement('span');
    by.className = 'served-by';
    by.textContent = el.dataset.replica || '?';
    by.title = 'the replica that answered this page\'s last request';
    el.append('Logged in as ', name,
      ` · session ${String(state.me.session_id).slice(0, 8)}…`,
      ' · last request served by ', by);
  }

  // Keeps the header's "served by" on the replica that answered last.
  function renderServedBy() {
    const el = $('me');
    if (!state.me || !state.lastReplica) return;
    el.dataset.replica = state.lastReplica;
    const by = el.querySelector('.served-by');
    if (by) by.textContent = state.lastReplica;
  }

  // Forgets everything about the session; `why` is shown when given.
  function loggedOut(why) {
    const wasIn = Boolean(state.me);
    state.me = null;
    state.lostSocket = null;
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
    $('sessions').hidden = true;
    $('sessions-list').replaceChildren();
    stopHeartbeat();
    if (why && wasIn) {
      notice(why, true);
      logEvent('logged-out', `logged out: ${why}`, true);
    }
  }

  async function whoAmI() {
    const res = await api('GET', '/v1/me');
    if (res.ok) {
      state.me = res.body;
      renderMe(res.replica);
    }
    return res;
  }

  // ---- sessions ------------------------------------------------------------------

  // Lists my sessions; hides the panel when the server keeps no list of them
  // (--sessions memory|shared answer `accounts-not-supported`).
  async function loadSessions() {
    const res = await api('GET', '/v1/sessions');
    if (!state.me) return;
    if (res.status === 400) {
      $('sessions').hidden = true;
      return;
    }
    if (!res.ok) {
      showError('sessions-error', problemText(res));
      return;
    }
    showError('sessions-error', '');
    $('sessions').hidden = false;
    renderSessions(res.body.sessions);
  }

  function renderSessions(sessions) {
    const list = $('sessions-list');
    list.replaceChildren();
    for (const s of sessions) {
      const li = document.createElement('li');
      li.dataset.sessionId = s.id;
      const when = new Date(s.created_at * 1000).toLocaleString();
      const refreshed = s.refreshed_at ? `, last refreshed ${time(s.refreshed_at)}` : '';
      const from = s.client_address || 'an unknown address';
      const agent = s.user_agent || 'an unknown client';
      const text = document.createElement('span');
      text.textContent = `${agent} from ${from}, logged in ${when}${refreshed}`;
      li.append(text);
      if (s.current) {
        li.dataset.current = 'true';
        const mark = document.createElement('strong');
        mark.textContent = ' (this browser)';
        li.append(mark);
      } else {
        const end = document.createElement('button');
        end.type = 'button';
        end.className = 'end';
        end.textContent = 'End';
        end.addEventListener('click', () => endSession(s.id));
        li.append(' ', end);
      }
      list.append(li);
    }
    $('sessions-end-others').disabled = sessions.length < 2;
  }

  async function endSession(id) {
    const res = await api('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);
    if (!res.ok && res.status !== 404) showError('sessions-error', problemText(res));
    else logEvent('session-ended', `ended session ${id.slice(0, 8)}…`);
    loadSessions();
  }

  async function endOtherSessions() {
    const res = await api('DELETE', '/v1/sessions/others');
    if (!res.ok) {
      showError('sessions-error', problemText(res));
      return;
    }
    notice(`Logged out ${res.body.ended} other session${res.body.ended === 1 ? '' : 's'}.`);
    loadSessions();
  }

  // ---- rooms ---------------------------------------------------------------------

  async function loadRooms() {
    const res = await api('GET', '/v1/rooms');
    if (!res.ok) {
      if (res.status !== 401) showError('rooms-error', problemText(res));
      return;
    }
    showError('rooms-error', '');
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
    state.resume = null;
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
    return d.toLocaleTimeString([], { hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit' });
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
    if (!room || m.room !== room.id) return;
    countResumed(m.seq);
    if (m.seq <= room.lastSeq) return;
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

  // Characters as the server counts them: Unicode scalar values, not UTF-16 units.
  function charCount(text) {
    return [...text].length;
  }

  function renderCount() {
    const n = charCount($('message-body').value);
    const el = $('message-count');
    el.textContent = `${n.toLocaleString('en')} / ${MAX_BODY_CHARS.toLocaleString('en')}`;
    el.classList.toggle('over', n > MAX_BODY_CHARS);
  }

  // Why `text` cannot be sent, or null.
  function refusal(text) {
    if (!text.length) return 'Type a message first.';
    if (!text.trim()) return 'A message of only spaces is not sent: type something to say.';
    const n = charCount(text);
    if (n > MAX_BODY_CHARS) {
      return `This message is ${n.toLocaleString('en')} characters; the limit is ` +
        `${MAX_BODY_CHARS.toLocaleString('en')}. Shorten it by ` +
        `${(n - MAX_BODY_CHARS).toLocaleString('en')} (nothing was cut).`;
    }
    return null;
  }

  function send(bodyText, reuseId) {
    const room = state.room;
    if (!room) return;
    const clientId = reuseId || crypto.randomUUID();
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
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'retry secondary small';
    retry.textContent = 'Retry';
    retry.addEventListener('click', () => {
      p.li.remove();
      if (state.room && state.room.id === p.room) send(p.body, frame.client_id);
    });
    const dismiss = document.createElement('button');
    dismiss.type = 'button';
    dismiss.className = 'dismiss secondary small';
    dismiss.textContent = 'Dismiss';
    dismiss.addEventListener('click', () => p.li.remove());
    p.li.append(' ', retry, ' ', dismiss);
  }

  // ---- the live connection -------------------------------------------------------

  function wsStatus(stateName, text) {
    const el = $('ws-status');
    const moved = el.dataset.replica !== (state.wsReplica || '');
    el.dataset.state = stateName;
    el.dataset.replica = state.wsReplica || '';
    if (moved) rerenderCluster();
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
    if (state.lostSocket) resumed(room.lastSeq);
  }

  // The socket that closed on its own is replaced and the room subscribed again from
  // `since`: one event in the log, whose counts grow as messages come.
  function resumed(since) {
    const lost = state.lostSocket;
    state.lostSocket = null;
    const entry = logEvent('reconnect', '', false, {
      from: lost.replica || '?', code: lost.code, to: state.wsReplica || '?', since,
      missed: 0, duplicated: 0, received: 0, attempts: lost.attempts,
    });
    state.resume = { entry, expected: since + 1 };
    describeResume(entry);
    renderLog();
    wsStatus('live', `live on replica ${state.wsReplica} · resumed from #${since} after ` +
      `${lost.replica || 'the old replica'} closed the socket (${lost.code})`);
  }

  function describeResume(e) {
    const tries = e.attempts > 1 ? ` after ${e.attempts} attempts` : '';
    const since = e.received ? ` (${e.received} received since)` : '';
    e.text = `socket on ${e.from} closed (${e.code}) → resumed on ${e.to} from #${e.since}` +
      `${tries}: ${e.missed} missed, ${e.duplicated} duplicated${since}`;
    e.bad = e.missed > 0 || e.duplicated > 0;
  }

  // Checks one seq that came after a resume against the one expected next: lower is a
  // duplicate, higher means the ones between were missed.
  function countResumed(seq) {
    const r = state.resume;
    if (!r) return;
    const e = r.entry;
    e.received += 1;
    if (seq < r.expected) {
      e.duplicated += 1;
    } else {
      e.missed += seq - r.expected;
      r.expected = seq + 1;
    }
    describeResume(e);
    renderLog();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case 'ready':
        state.wsReady = true;
        state.wsReplica = frame.replica;
        state.reconnectAttempts = 0;
        wsStatus('live', `live on replica ${frame.replica}`);
        subscribe();
        if (state.lostSocket && !state.room) {
          const lost = state.lostSocket;
          state.lostSocket = null;
          logEvent('reconnect', `socket on ${lost.replica || '?'} closed (${lost.code}) → ` +
            `reconnected to ${frame.replica} (no room to resume)`, false,
          { from: lost.replica || '?', code: lost.code, to: frame.replica });
        }
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
    const lostOn = state.wsReplica;
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
    // refused the upgrade): reconnect, to whichever replica the origin leads to. The
    // first socket lost is the one the log's reconnect event names; attempts that fail
    // on the way are counted in it.
    if (state.lostSocket) state.lostSocket.attempts += 1;
    else state.lostSocket = { replica: lostOn, code, at: new Date(), attempts: 1 };
    const why = `socket ${lostOn ? `on ${lostOn} ` : ''}closed with ${code}${reason ? ` (${reason})` : ''}`;
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
      if (state.me) startHeartbeat();
      renderLog();
    }
    $('cluster-status').textContent = ok ? '' : '(balancer unreachable)';
    if (ok) {
      state.clusterBody = body;
      renderCluster(body);
    }
  }

  // The marks "my socket" and "last request" follow the page at once, not at the next
  // poll.
  function rerenderCluster() {
    if (state.clusterBody) renderCluster(state.clusterBody);
  }

  // What each session design keeps, and what a Kill of your replica does to you under
  // it: the guide's words, picked by what the cluster says it runs.
  const SESSIONS_WHAT = {
    token: 'a signed token that any replica checks on its own: no replica holds it',
    shared: 'a session id that every replica looks up in a shared store on every request',
    memory: 'a session id held in the memory of one replica, and nowhere else',
  };

  function killOutcome(sessions, policy) {
    switch (sessions) {
      case 'token':
        return 'Expect: you stay logged in. The chat moves to another replica and the log ' +
          'says "socket on rN closed (1006) → resumed on rM from #S: 0 missed, 0 duplicated".';
      case 'shared':
        return 'Expect: you stay logged in (the session is in the shared store) and the log ' +
          'says "resumed … 0 missed, 0 duplicated"; the price is a lookup per request.';
      case 'memory':
        return policy === 'sticky'
          ? 'Expect: you are logged out. Your session lived in that replica\'s memory and ' +
            'died with it; the replica you land on next has never heard of you.'
          : 'Expect: trouble before any Kill: round-robin sends you to replicas that never ' +
            'saw your login, so you are logged out at once (memory needs --sticky).';
      default:
        return 'Expect: whatever the session design allows; this cluster does not say which.';
    }
  }

  function addOutcome(policy) {
    return policy === 'sticky'
      ? 'Expect: it takes new clients within seconds; you stay pinned to yours (sticky), so ' +
        'its traffic bars grow with other users\' requests.'
      : 'Expect: within seconds its traffic bars grow with its share of every request ' +
        `(this page asks GET /v1/me every ${HEARTBEAT_MS / 1000} s, so there is traffic ` +
        'while you only chat).';
  }

  // A command as <code>, each word unbroken: a line may end between words, never
  // inside "--sticky".
  function command(text) {
    const code = document.createElement('code');
    text.split(' ').forEach((word, i) => {
      const span = document.createElement('span');
      span.textContent = word;
      code.append(...(i ? [' ', span] : [span]));
    });
    return code;
  }

  // The other side, as words and the command to run.
  function compareWith(sessions) {
    if (sessions === 'memory') {
      return ['Compare: ', command('herd cluster'),
        ' (stateless tokens), where the same Kill logs nobody out.'];
    }
    return ['Compare: ', command('herd cluster --sessions memory --sticky'),
      ', where the same Kill logs you out.'];
  }

  function renderGuide() {
    const d = state.design;
    if (!d) return;
    const guide = $('guide');
    guide.dataset.sessions = d.sessions || '';
    guide.dataset.policy = d.policy || '';
    const what = SESSIONS_WHAT[d.sessions] || 'a design this cluster does not name';
    $('guide-intro').textContent = 'Replicas behind a balancer ' +
      `(${d.policy || 'policy unknown'}); your login is ${what}. Try:`;
    $('guide-kill').textContent = killOutcome(d.sessions, d.policy);
    $('guide-add').textContent = addOutcome(d.policy);
    $('guide-steps').hidden = false;
    $('guide-design').replaceChildren(...compareWith(d.sessions));
    $('guide-design').hidden = false;
  }

  // How a replica is shown: a dead one by how it ended, so a drain is not a crash.
  function stateLabel(r) {
    const s = String(r.state);
    if (s === 'dead') {
      switch (r.ended) {
        case 'killed': return { text: 'killed', cls: 'state-killed' };
        case 'crashed': return { text: 'crashed', cls: 'state-dead' };
        case 'drained': return { text: 'drained', cls: 'state-drained' };
        case 'stopped': return { text: 'stopped', cls: 'state-drained' };
        default: return { text: 'dead', cls: 'state-dead' };
      }
    }
    if (s === 'down') return { text: 'down: failing /readyz', cls: 'state-down' };
    return { text: s, cls: `state-${s}` };
  }

  // When the page first saw each replica dead, so that the latest ones keep their rows.
  const deadSince = new Map();

  function renderCluster(body) {
    state.design = { sessions: body.sessions || null, policy: body.policy || null };
    renderGuide();
    $('cluster-policy').textContent = body.policy || '-';
    $('cluster-sessions').textContent = body.sessions || 'unknown';
    const seconds = body.traffic_seconds || 30;
    $('cluster-window').textContent = String(seconds);

    const replicas = body.replicas.map((r) => ({ ...r, id: String(r.id) }));
    let order = 0;
    for (const r of replicas) {
      order += 1;
      if (r.state !== 'dead') deadSince.delete(r.id);
      else if (!deadSince.has(r.id)) deadSince.set(r.id, Date.now() * 1000 + order);
    }
    const gone = replicas.filter((r) => r.state === 'dead')
      .sort((a, b) => deadSince.get(b.id) - deadSince.get(a.id));
    const shownGone = new Set(gone.slice(0, GONE_SHOWN).map((r) => r.id));
    const earlier = gone.slice(GONE_SHOWN);
    $('cluster-gone').hidden = earlier.length === 0;
    $('cluster-gone').textContent = earlier.length
      ? `Gone earlier: ${earlier.map((r) => `${r.id} (${stateLabel(r).text})`).join(', ')}.`
      : '';

    // One scale for every replica's bars, so that they compare.
    const peak = Math.max(1, ...replicas.flatMap((r) => r.recent_requests || []));

    const tbody = $('cluster-replicas');
    const focused = document.activeElement;
    const focusKey = focused && focused.dataset && focused.dataset.id !== undefined
      ? `${focused.className}|${focused.dataset.id}` : null;
    tbody.replaceChildren();
    for (const r of replicas) {
      const dead = r.state === 'dead';
      if (dead && !shownGone.has(r.id)) continue;
      const tr = document.createElement('tr');
      tr.dataset.id = r.id;
      tr.dataset.state = r.state;
      if (dead) {
        tr.dataset.ended = r.ended || '';
        tr.classList.add('gone');
      }
      const recent = r.recent_requests || [];
      const total = recent.reduce((a, b) => a + b, 0);
      tr.dataset.traffic = String(total);

      const idCell = cell('Replica', r.id);
      idCell.className = 'id';
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
        idCell.append(mark);
      }
      const label = stateLabel(r);
      const stateCell = cell('State', label.text);
      stateCell.classList.add('state', label.cls);
      const trafficCell = cell('Requests/s (all users)', '');
      trafficCell.classList.add('traffic');
      trafficCell.append(trafficChart(recent, peak, seconds),
        ` ${total} in ${seconds} s`);
      const servedCell = cell('Served (all users)', String(r.requests_served ?? '-'));
      servedCell.classList.add('served');
      const where = cell('Process', dead ? `port ${r.port ?? '-'}, exited`
        : `port ${r.port ?? '-'} · pid ${r.pid ?? '-'}`);
      where.classList.add('where');
      const actions = cell('Actions', '');
      actions.classList.add('actions');
      if (!dead) {
        actions.append(
          actionButton('Kill', 'kill danger', r.id, () => killReplica(r.id)),
          actionButton('Drain', 'drain secondary', r.id, () => drainReplica(r.id)),
        );
      }
      tr.append(idCell, stateCell, trafficCell, servedCell, where, actions);
      tbody.append(tr);
    }
    // Rows are rebuilt every second: keep the keyboard where it was.
    if (focusKey) {
      for (const b of tbody.querySelectorAll('button')) {
        if (`${b.className}|${b.dataset.id}` === focusKey) b.focus();
      }
    }
  }

  // A table cell; `label` names it where the narrow layout shows rows as cards.
  function cell(label, text) {
    const td = document.createElement('td');
    td.dataset.label = label;
    td.textContent = text;
    return td;
  }

  // Requests per second as bars, drawn with SVG attributes (never a style attribute,
  // which the Content-Security-Policy forbids); the newest second on the right.
  function trafficChart(counts, peak, seconds) {
    const NS = 'http://www.w3.org/2000/svg';
    const width = Math.max(1, counts.length) * 4;
    const height = 24;
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('class', 'chart');
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', String(width));
    svg.setAttribute('height', String(height));
    svg.setAttribute('role', 'img');
    // Stretched to the cell's width where the narrow layout gives it the whole row.
    svg.setAttribute('preserveAspectRatio', 'none');
    const total = counts.reduce((a, b) => a + b, 0);
    svg.setAttribute('aria-label', `${total} requests in the last ${seconds} seconds`);
    const base = document.createElementNS(NS, 'rect');
    base.setAttribute('class', 'base');
    base.setAttribute('x', '0');
    base.setAttribute('y', String(height - 1));
    base.setAttribute('width', String(width));
    base.setAttribute('height', '1');
    svg.append(base);
    counts.forEach((n, i) => {
      if (!n) return;
      const h = Math.max(2, Math.round((n / peak) * (height - 2)));
      const bar = document.createElementNS(NS, 'rect');
      bar.setAttribute('class', 'bar');
      bar.setAttribute('x', String(i * 4));
      bar.setAttribute('y', String(height - h));
      bar.setAttribute('width', '3');
      bar.setAttribute('height', String(h));
      const title = document.createElementNS(NS, 'title');
      title.textContent = `${n} request${n === 1 ? '' : 's'}, ${counts.length - 1 - i} s ago`;
      bar.append(title);
      svg.append(bar);
    });
    return svg;
  }

  function actionButton(label, className, id, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.dataset.id = id;
    b.textContent = label;
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

  // A cluster action; its refusal shows under the cluster's buttons until the next one.
  async function clusterPost(path) {
    showError('cluster-error', '');
    const res = await api('POST', path, undefined, { retry: false });
    if (!res.ok) {
      showError('cluster-error', `${path}: ${problemText(res)}`);
      logEvent('refused', `${path} refused: ${problemText(res)}`, true);
    }
    pollCluster();
    return res;
  }

  async function killReplica(id) {
    state.lastKillAt = Date.now();
    const res = await clusterPost(`/_cluster/replicas/${encodeURIComponent(id)}/kill`);
    if (res.ok) logEvent('kill', `killed ${id} (SIGKILL: a crash, nothing is finished)`, false, { replica: id });
    // Ask at once whether the session survived, rather than at the next click: under
    // token sessions it does; under server-memory sessions held by that replica it
    // does not, and the notice says why.
    if (state.me) setTimeout(() => { if (state.me) whoAmI(); }, 500);
  }

  async function drainReplica(id) {
    const res = await clusterPost(`/_cluster/replicas/${encodeURIComponent(id)}/drain`);
    if (res.ok) {
      logEvent('drain', `draining ${id} (SIGTERM: it finishes what it has; its sockets ` +
        'close with 1012 and move)', false, { replica: id });
    }
  }

  async function addReplica() {
    const res = await clusterPost('/_cluster/replicas');
    if (res.ok && res.body) {
      logEvent('add', `added ${res.body.id}: starting, it takes requests once its /readyz ` +
        'passes', false, { replica: String(res.body.id) });
    }
  }

  function renderLog() {
    const list = $('log');
    if (!state.cluster) return;
    list.replaceChildren();
    for (const e of state.log) {
      const li = document.createElement('li');
      li.dataset.kind = e.kind;
      const at = document.createElement('span');
      at.className = 'at';
      at.textContent = e.at.toLocaleTimeString([], { hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit' });
      li.append(at, ' ');
      if (e.kind === 'event') {
        li.dataset.event = e.event;
        for (const key of ['from', 'to', 'since', 'missed', 'duplicated', 'received', 'replica']) {
          if (e[key] !== undefined) li.dataset[key] = String(e[key]);
        }
        li.append(e.text);
        li.classList.add(e.bad ? 'bad' : 'event');
      } else {
        li.dataset.replica = e.replica || '';
        li.dataset.path = e.path;
        li.dataset.status = e.status;
        li.dataset.count = e.count;
        const who = e.path.startsWith('/_cluster/') ? 'the balancer'
          : e.replicas.length ? e.replicas.join(', ') : 'no replica';
        const status = e.status ? String(e.status) : 'no answer';
        const times = e.count > 1 ? ` ×${e.count}` : '';
        const note = e.expected ? ' (no session yet: expected)' : '';
        li.append(`${e.method} ${e.path} → ${status}${times} · ${who}${note}`);
        if (e.expected) li.classList.add('expected');
        else if (!e.status || e.status >= 400) li.classList.add('bad');
      }
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

  // An error belongs to its form: it goes when the form is used again.
  function clearOnInput(inputId, errorId) {
    $(inputId).addEventListener('input', () => showError(errorId, ''));
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

  $('sessions-end-others').addEventListener('click', endOtherSessions);

  $('logout').addEventListener('click', async () => {
    await api('POST', '/v1/auth/logout', undefined, { retry: false });
    loggedOut();
    notice('You logged out.');
  });

  onSubmit('room-create-form', async () => {
    showError('room-create-error', '');
    const res = await api('POST', '/v1/rooms', { name: $('room-name').value });
    if (!res.ok) {
      showError('room-create-error', problemText(res));
      return;
    }
    $('room-name').value = '';
    state.rooms.push(res.body);
    renderRooms();
    pickRoom(res.body);
  });
  clearOnInput('room-name', 'room-create-error');

  onSubmit('room-join-form', async () => {
    showError('room-join-error', '');
    const id = $('room-join-id').value.trim();
    const res = await api('POST', `/v1/rooms/${encodeURIComponent(id)}/join`);
    if (!res.ok) {
      showError('room-join-error', problemText(res));
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
  clearOnInput('room-join-id', 'room-join-error');

  $('cluster-add').addEventListener('click', addReplica);

  $('message-body').addEventListener('input', () => {
    renderCount();
    showError('message-error', '');
  });

  $('message-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('message-body');
    const text = input.value;
    const why = refusal(text);
    showError('message-error', why);
    if (why) {
      input.focus();
      return;
    }
    input.value = '';
    renderCount();
    send(text);
    input.focus();
  });

  // On load: a session that survived a reload (its cookies are still there) resumes.
  // Asking is how the page finds out, so a 401 here is an answer, not a failure.
  async function start() {
    pollCluster();
    const res = await api('GET', '/v1/me', undefined, { retry: false, expected: true });
    if (res.ok) {
      loggedIn(res.body, res.replica);
    } else if (res.status === 401 && state.csrf && await refresh(true)) {
      const again = await api('GET', '/v1/me', undefined, { retry: false, expected: true });
      if (again.ok) loggedIn(again.body, again.replica);
    }
  }

  start();
})();
