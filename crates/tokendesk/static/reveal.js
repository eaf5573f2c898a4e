// tokendesk delivery page: decrypts the token in the browser. The key is the link's fragment
// (after "#"), which browsers never send to a server; this script never sends it either. It
// asks the server only for the ciphertext (POST, which counts as one reveal).
(function () {
  'use strict';

  var KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/;
  var STASH = 'tokendesk-key:';

  function keyFromHash() {
    var h = window.location.hash.replace(/^#/, '');
    return KEY_PATTERN.test(h) ? h : null;
  }

  function b64url(text) {
    var s = text.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) { s += '='; }
    var bin = window.atob(s);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }

  // Signed out: keep the key in this tab while the person signs in, then go to sign in.
  var signin = document.getElementById('signin-envelope');
  if (signin) {
    var k = keyFromHash();
    if (k) {
      try { window.sessionStorage.setItem(STASH + signin.dataset.envelopeId, k); } catch (e) { /* private mode */ }
    }
    window.location.replace(signin.dataset.signIn);
    return;
  }

  var root = document.getElementById('envelope');
  if (!root) { return; }
  var id = root.dataset.envelopeId;
  var revealUrl = root.dataset.revealUrl;
  var button = document.getElementById('reveal');
  var status = document.getElementById('reveal-status');
  var secret = document.getElementById('secret');
  var field = document.getElementById('token-value');
  var copy = document.getElementById('copy');
  var copyStatus = document.getElementById('copy-status');
  var left = document.getElementById('reveals-left');

  var key = keyFromHash();
  if (!key) {
    // Back from signing in: the key was kept in this tab; put it back in the address bar.
    try {
      var kept = window.sessionStorage.getItem(STASH + id);
      window.sessionStorage.removeItem(STASH + id);
      if (kept && KEY_PATTERN.test(kept)) {
        key = kept;
        window.history.replaceState(null, '', window.location.pathname + window.location.search + '#' + kept);
      }
    } catch (e) { /* no storage */ }
  }
  if (!key || !window.crypto || !window.crypto.subtle) {
    document.getElementById('nokey').hidden = false;
    button.disabled = true;
    if (key) { status.textContent = 'This browser cannot decrypt the token (WebCrypto is missing). Use an up-to-date browser.'; }
    return;
  }

  function say(text) { status.textContent = text; }

  button.addEventListener('click', function () {
    button.disabled = true;
    say('Opening…');
    fetch(revealUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
      body: '{}',
      credentials: 'same-origin',
      cache: 'no-store'
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          var message = body && body.error && body.error.message ? body.error.message : 'the server refused';
          throw new Error('Could not reveal the token: ' + message + '.');
        }
        return body;
      });
    }).then(function (body) {
      return window.crypto.subtle.importKey('raw', b64url(key), { name: 'AES-GCM' }, false, ['decrypt'])
        .then(function (cryptoKey) {
          return window.crypto.subtle.decrypt(
            { name: 'AES-GCM', iv: b64url(body.nonce), additionalData: new TextEncoder().encode(id) },
            cryptoKey,
            b64url(body.ciphertext));
        })
        .catch(function () {
          throw new Error('The key in this link does not open the token. Open the whole link from your email again.');
        })
        .then(function (plain) {
          field.value = new TextDecoder().decode(plain);
          if (left) { left.textContent = String(body.reveals_left); }
          secret.hidden = false;
          button.hidden = true;
          say('Revealed. ' + body.reveals_left + ' reveal(s) left.');
          field.focus();
          field.select();
        });
    }).catch(function (e) {
      say(e.message);
      button.disabled = false;
    });
  });

  copy.addEventListener('click', function () {
    var done = function () { copyStatus.textContent = 'Copied.'; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        field.select();
        copyStatus.textContent = 'Select the token and copy it with Ctrl+C (⌘C).';
      });
    } else {
      field.select();
      copyStatus.textContent = 'Select the token and copy it with Ctrl+C (⌘C).';
    }
  });
}());
