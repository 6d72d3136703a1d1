/*
 * Clientele — keyboard shortcuts.
 *
 * This script is an enhancement only: every page must work without it, so it
 * never renders content a user needs, it only adds faster ways to reach what
 * the server already put on the page. The site runs under a strict CSP
 * (script-src 'self'; style-src 'self'), which is why there is no eval, no
 * inline handler and no inline style here: all visual state is expressed
 * through classes and the `hidden` attribute, styled in app.css.
 *
 * Public API (for a page's own script, loaded after this one):
 *
 *   const off = Clientele.shortcuts.register("g c", "Go to customers", (event) => { ... });
 *   off(); // removes it again
 *
 * Declarative API (no JS per page):
 *
 *   <a href="/customers" data-shortcut="g c" data-shortcut-label="Go to customers">Customers</a>
 *   <input type="search" name="q" data-search>             ("/" focuses it)
 *   <a href="/actions" data-shortcut-actions>Actions</a>   (Ctrl+Alt+A follows it)
 *
 * Key specs: steps separated by spaces ("g c" = g, then c within one second).
 * A step is a character as typed ("n", "N", "?", "/") or a named key
 * ("Enter", "Esc", "Space", "ArrowUp", "F2"), optionally with "Ctrl+",
 * "Alt+" and, for named keys or Ctrl/Alt combinations, "Shift+" in front.
 */
(function () {
  "use strict";

  // Sequences must be typed reasonably quickly; otherwise a stray "g" pressed
  // minutes ago would turn the next unrelated key into a navigation.
  var SEQUENCE_TIMEOUT_MS = 1000;

  // Named keys accepted in specs, mapped to their KeyboardEvent.key values so
  // matching is a plain string comparison.
  var NAMED_KEYS = {
    esc: "Escape", escape: "Escape",
    enter: "Enter", "return": "Enter",
    space: " ", spacebar: " ",
    tab: "Tab", backspace: "Backspace",
    del: "Delete", "delete": "Delete", insert: "Insert",
    up: "ArrowUp", arrowup: "ArrowUp",
    down: "ArrowDown", arrowdown: "ArrowDown",
    left: "ArrowLeft", arrowleft: "ArrowLeft",
    right: "ArrowRight", arrowright: "ArrowRight",
    home: "Home", end: "End", pageup: "PageUp", pagedown: "PageDown"
  };
  for (var f = 1; f <= 12; f += 1) {
    NAMED_KEYS["f" + f] = "F" + f;
  }

  // Input types that do not take typed text. A user who tabbed onto a
  // checkbox or a button is not typing, so "/" or "?" should still work from
  // there; every other input type (including unknown future ones) is treated
  // as a text field, erring on the side of never eating typed characters.
  var NON_TEXT_INPUT_TYPES = {
    checkbox: true, radio: true, button: true, submit: true, reset: true,
    image: true, file: true, color: true, range: true, hidden: true
  };

  var IS_MAC = /Mac|iPhone|iPad/.test(
    (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || ""
  );

  // ---------------------------------------------------------------------------
  // Key spec parsing and event normalisation.
  //
  // Both a spec step and a keydown event are reduced to the same canonical
  // string ("ctrl+alt+a", "?", "shift+Enter"), so lookup never has to reason
  // about keyboard layouts at match time.
  // ---------------------------------------------------------------------------

  function canonical(ctrl, alt, shift, key) {
    return (ctrl ? "ctrl+" : "") + (alt ? "alt+" : "") + (shift ? "shift+" : "") + key;
  }

  function parseStep(step) {
    var parts;
    // "+" is both the separator and a legitimate key ("+" or "Ctrl++").
    if (step === "+") {
      parts = ["+"];
    } else if (step.length > 2 && step.slice(-2) === "++") {
      parts = step.slice(0, -2).split("+").concat(["+"]);
    } else {
      parts = step.split("+");
    }
    var key = parts.pop();
    var ctrl = false;
    var alt = false;
    var shift = false;
    parts.forEach(function (mod) {
      switch (mod.toLowerCase()) {
        case "ctrl": case "control": ctrl = true; break;
        case "alt": case "option": case "opt": alt = true; break;
        case "shift": shift = true; break;
        default:
          // Meta/Cmd combinations belong to the browser and the OS; refusing
          // them here keeps pages from ever shadowing Cmd+F, Cmd+L and co.
          throw new TypeError("Clientele.shortcuts: unsupported modifier \"" + mod + "\" in \"" + step + "\"");
      }
    });
    if (!key) {
      throw new TypeError("Clientele.shortcuts: empty key in \"" + step + "\"");
    }
    if (key.length > 1) {
      var named = NAMED_KEYS[key.toLowerCase()];
      if (!named) {
        throw new TypeError("Clientele.shortcuts: unknown key \"" + key + "\"");
      }
      return canonical(ctrl, alt, shift, named);
    }
    if (ctrl || alt) {
      // With Ctrl/Alt held, layouts disagree about which character is
      // produced, so letters and digits are matched case-insensitively and
      // Shift is an explicit modifier.
      return canonical(ctrl, alt, shift, key.toLowerCase());
    }
    if (shift) {
      // For plain characters the typed character already encodes Shift
      // ("?" rather than "Shift+/"), which is layout-independent.
      if (/^[a-z]$/i.test(key)) {
        return key.toUpperCase();
      }
      throw new TypeError("Clientele.shortcuts: write the shifted character itself instead of \"" + step + "\"");
    }
    return key;
  }

  function parseSpec(spec) {
    if (typeof spec !== "string" || !spec.trim()) {
      throw new TypeError("Clientele.shortcuts: key spec must be a non-empty string");
    }
    return spec.trim().split(/\s+/).map(parseStep);
  }

  // Returns the canonical step for a keydown, or null when the event must be
  // left entirely to the browser.
  function eventStep(event) {
    var key = event.key;
    if (!key || key === "Dead" || key === "Unidentified" || key === "Process") {
      return null;
    }
    if (key === "Control" || key === "Alt" || key === "Shift" || key === "Meta" || key === "AltGraph") {
      // A bare modifier press must not reset a pending sequence.
      return null;
    }
    if (event.ctrlKey || event.altKey) {
      var k = key;
      if (!/^[a-z0-9]$/i.test(k)) {
        // Option on macOS (and AltGr elsewhere) turns letters into other
        // characters ("å"); the physical key still identifies the shortcut.
        var m = /^(?:Key([A-Z])|Digit([0-9]))$/.exec(event.code || "");
        if (m) {
          k = m[1] || m[2];
        }
      }
      return canonical(event.ctrlKey, event.altKey, event.shiftKey,
        k.length === 1 ? k.toLowerCase() : k);
    }
    if (key.length === 1) {
      return key;
    }
    return canonical(false, false, event.shiftKey, key);
  }

  // Human-readable caps for the help overlay, e.g. [["Ctrl","Alt","A"]].
  function displaySteps(steps) {
    return steps.map(function (step) {
      var caps = [];
      var rest = step;
      var mods = [["ctrl+", "Ctrl"], ["alt+", IS_MAC ? "Option" : "Alt"], ["shift+", "Shift"]];
      mods.forEach(function (pair) {
        if (rest.indexOf(pair[0]) === 0 && rest.length > pair[0].length) {
          caps.push(pair[1]);
          rest = rest.slice(pair[0].length);
        }
      });
      if (rest === " ") {
        rest = "Space";
      } else if (rest === "Escape") {
        rest = "Esc";
      } else if (caps.length && rest.length === 1) {
        rest = rest.toUpperCase();
      }
      caps.push(rest);
      return caps;
    });
  }

  // ---------------------------------------------------------------------------
  // Registry.
  // ---------------------------------------------------------------------------

  var entries = [];      // in registration order, which is the help order
  var reserved = {};     // canonical specs owned by the built-ins
  var pending = [];      // steps typed so far in an unfinished sequence
  var pendingTimer = 0;

  function specKey(steps) {
    return steps.join(" ");
  }

  function available(entry) {
    return !entry.when || entry.when();
  }

  function addEntry(spec, description, handler, options) {
    var steps = parseSpec(spec);
    if (typeof handler !== "function") {
      throw new TypeError("Clientele.shortcuts: handler must be a function");
    }
    var id = specKey(steps);
    if (reserved[id] && !(options && options.builtin)) {
      throw new TypeError("Clientele.shortcuts: \"" + spec + "\" is reserved");
    }
    // Last registration wins, so a page can deliberately take over a key
    // that an earlier (e.g. declarative) registration used.
    entries = entries.filter(function (e) { return e.id !== id; });
    var entry = {
      id: id,
      steps: steps,
      description: String(description || ""),
      handler: handler,
      when: options && options.when,
      builtin: Boolean(options && options.builtin)
    };
    entries.push(entry);
    if (entry.builtin) {
      reserved[id] = true;
    }
    return function unregister() {
      entries = entries.filter(function (e) { return e !== entry; });
    };
  }

  function startsWith(steps, prefix) {
    if (steps.length <= prefix.length) {
      return false;
    }
    for (var i = 0; i < prefix.length; i += 1) {
      if (steps[i] !== prefix[i]) {
        return false;
      }
    }
    return true;
  }

  function findExact(steps) {
    var id = specKey(steps);
    for (var i = 0; i < entries.length; i += 1) {
      if (entries[i].id === id && available(entries[i])) {
        return entries[i];
      }
    }
    return null;
  }

  function isPrefix(steps) {
    return entries.some(function (e) {
      return startsWith(e.steps, steps) && available(e);
    });
  }

  function resetPending() {
    pending = [];
    if (pendingTimer) {
      clearTimeout(pendingTimer);
      pendingTimer = 0;
    }
  }

  // ---------------------------------------------------------------------------
  // Helpers for built-ins and declarative shortcuts.
  // ---------------------------------------------------------------------------

  function isTyping(target) {
    if (!target || target.nodeType !== 1) {
      return false;
    }
    if (target.isContentEditable) {
      return true;
    }
    var tag = target.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") {
      return true;
    }
    if (tag === "INPUT") {
      var type = (target.getAttribute("type") || "text").toLowerCase();
      return !NON_TEXT_INPUT_TYPES[type];
    }
    return false;
  }

  function isFormControl(el) {
    return /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) || el.isContentEditable;
  }

  function searchField() {
    var marked = document.querySelector("[data-search]");
    if (marked) {
      // Allow marking a wrapper (e.g. the search form) as well as the field.
      if (isFormControl(marked)) {
        return marked;
      }
      var inner = marked.querySelector("input:not([type=hidden]), textarea, select");
      if (inner) {
        return inner;
      }
    }
    return document.querySelector("input[type=search]");
  }

  function actionsLink() {
    var el = document.querySelector("[data-shortcut-actions]");
    if (!el) {
      return null;
    }
    // Prefer the resolved URL of a real link, but accept any element that
    // carries an href so the nav markup is not constrained.
    var href = el.href && typeof el.href === "string" ? el.href : el.getAttribute("href");
    return href || null;
  }

  function activate(node) {
    if (!node.isConnected || node.disabled || node.getAttribute("aria-disabled") === "true") {
      return;
    }
    if (isFormControl(node)) {
      // Clicking a checkbox or select would change data; focusing only moves
      // the user there, which is what a shortcut to a field should do.
      node.focus();
    } else {
      node.click();
    }
  }

  // ---------------------------------------------------------------------------
  // Help overlay.
  //
  // Built lazily and rebuilt on every open, because pages may register or
  // remove shortcuts at any time. It is a div-based modal dialog: background
  // content is made inert (so neither pointer, Tab nor screen reader virtual
  // cursor can reach it) and focus is returned to where the user was.
  // ---------------------------------------------------------------------------

  var overlay = null;
  var dialog = null;
  var body = null;
  var closeButton = null;
  var returnFocusTo = null;
  var inertedByUs = [];

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text) {
      node.textContent = text;
    }
    return node;
  }

  function buildOverlay() {
    overlay = el("div", "shortcut-overlay");
    overlay.hidden = true;
    dialog = el("div", "shortcut-dialog");
    dialog.setAttribute("role", "dialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", "shortcut-overlay-title");
    dialog.tabIndex = -1;

    var head = el("div", "shortcut-head");
    var title = el("h2", "", "Keyboard shortcuts");
    title.id = "shortcut-overlay-title";
    closeButton = el("button", "secondary", "Close");
    closeButton.type = "button";
    closeButton.addEventListener("click", closeHelp);
    head.appendChild(title);
    head.appendChild(closeButton);

    body = el("div", "shortcut-body");
    var foot = el("p", "hint");
    foot.appendChild(document.createTextNode("Press "));
    foot.appendChild(el("kbd", "kbd", "Esc"));
    foot.appendChild(document.createTextNode(" or "));
    foot.appendChild(el("kbd", "kbd", "?"));
    foot.appendChild(document.createTextNode(" to close. Shortcuts are ignored while typing in a field."));

    dialog.appendChild(head);
    dialog.appendChild(body);
    dialog.appendChild(foot);
    overlay.appendChild(dialog);

    // A click on the dimmed backdrop (not inside the panel) dismisses, as
    // users expect from any modal.
    overlay.addEventListener("click", function (event) {
      if (event.target === overlay) {
        closeHelp();
      }
    });
    document.body.appendChild(overlay);
  }

  function renderKeys(steps) {
    var frag = document.createDocumentFragment();
    displaySteps(steps).forEach(function (caps, i) {
      if (i > 0) {
        frag.appendChild(el("span", "shortcut-then", " then "));
      }
      caps.forEach(function (cap, j) {
        if (j > 0) {
          frag.appendChild(document.createTextNode("+"));
        }
        frag.appendChild(el("kbd", "kbd", cap));
      });
    });
    return frag;
  }

  function renderSection(heading, list) {
    if (!list.length) {
      return;
    }
    body.appendChild(el("h3", "", heading));
    var dl = el("dl");
    list.forEach(function (entry) {
      var dt = el("dt");
      dt.appendChild(renderKeys(entry.steps));
      dl.appendChild(dt);
      dl.appendChild(el("dd", "", entry.description || "(no description)"));
    });
    body.appendChild(dl);
  }

  function renderHelp() {
    body.textContent = "";
    var usable = entries.filter(available);
    renderSection("Everywhere", usable.filter(function (e) { return e.builtin; }));
    renderSection("On this page", usable.filter(function (e) { return !e.builtin; }));
  }

  function helpOpen() {
    return Boolean(overlay && !overlay.hidden);
  }

  function openHelp() {
    if (!overlay) {
      buildOverlay();
    }
    renderHelp();
    returnFocusTo = document.activeElement;
    inertedByUs = [];
    Array.prototype.forEach.call(document.body.children, function (child) {
      if (child !== overlay && !child.inert) {
        child.inert = true;
        inertedByUs.push(child);
      }
    });
    document.documentElement.classList.add("shortcut-overlay-open");
    overlay.hidden = false;
    closeButton.focus();
  }

  function closeHelp() {
    if (!helpOpen()) {
      return;
    }
    overlay.hidden = true;
    document.documentElement.classList.remove("shortcut-overlay-open");
    inertedByUs.forEach(function (child) { child.inert = false; });
    inertedByUs = [];
    var target = returnFocusTo;
    returnFocusTo = null;
    if (target && target.isConnected && typeof target.focus === "function" && target !== document.body) {
      target.focus();
    }
  }

  function toggleHelp() {
    if (helpOpen()) {
      closeHelp();
    } else {
      openHelp();
    }
  }

  // Keeps Tab inside the dialog for browsers without `inert`, where focus
  // could otherwise wander into the page behind the backdrop.
  function trapTab(event) {
    var focusables = Array.prototype.filter.call(
      dialog.querySelectorAll("a[href], button:not([disabled]), [tabindex]:not([tabindex='-1'])"),
      function (node) { return !node.hidden; }
    );
    if (!focusables.length) {
      event.preventDefault();
      dialog.focus();
      return;
    }
    var first = focusables[0];
    var last = focusables[focusables.length - 1];
    var current = document.activeElement;
    if (!dialog.contains(current)) {
      event.preventDefault();
      first.focus();
    } else if (event.shiftKey && current === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && current === last) {
      event.preventDefault();
      first.focus();
    }
  }

  // ---------------------------------------------------------------------------
  // Keyboard dispatch.
  // ---------------------------------------------------------------------------

  function onKeydown(event) {
    if (event.defaultPrevented || event.isComposing) {
      return;
    }

    if (event.key === "Escape" || event.key === "Esc") {
      resetPending();
      if (helpOpen()) {
        event.preventDefault();
        closeHelp();
      }
      return;
    }

    if (helpOpen()) {
      // While the modal is up, only its own keys apply; page shortcuts would
      // act on content the user cannot currently see.
      if (event.key === "Tab") {
        trapTab(event);
      } else if (event.key === "?" && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        closeHelp();
      }
      return;
    }

    // Leave the browser's and the OS's own shortcuts alone: anything with
    // Meta, and Ctrl without Alt (Ctrl+F, Ctrl+L, Ctrl+R ...). Ctrl+Alt is
    // let through because it is how the reserved Ctrl+Alt+A is typed.
    if (event.metaKey || (event.ctrlKey && !event.altKey)) {
      return;
    }
    if (isTyping(event.target)) {
      return;
    }
    if (event.repeat) {
      // Holding a key down must not fire a navigation or a click repeatedly.
      return;
    }

    var step = eventStep(event);
    if (step === null) {
      return;
    }

    var candidate = pending.concat([step]);
    var match = findExact(candidate);
    var waiting = !match && isPrefix(candidate);
    if (!match && !waiting && pending.length) {
      // The sequence broke; the key may still start or be a shortcut on its
      // own (e.g. "g x" then "g c" should still work on the second "g").
      candidate = [step];
      match = findExact(candidate);
      waiting = !match && isPrefix(candidate);
    }

    resetPending();
    if (match) {
      event.preventDefault();
      match.handler(event);
    } else if (waiting) {
      // Swallow the prefix key so e.g. Firefox's find-as-you-type does not
      // grab the "g" of "g c".
      event.preventDefault();
      pending = candidate;
      pendingTimer = setTimeout(resetPending, SEQUENCE_TIMEOUT_MS);
    }
  }

  // ---------------------------------------------------------------------------
  // Built-ins.
  // ---------------------------------------------------------------------------

  addEntry("?", "Show or hide this list of shortcuts", toggleHelp, { builtin: true });

  addEntry("/", "Focus the search field", function () {
    var field = searchField();
    field.focus();
    if (typeof field.select === "function") {
      // Selecting lets the user type a new query straight away.
      field.select();
    }
  }, {
    builtin: true,
    // Without a search field "/" stays unclaimed, so the browser's own quick
    // find keeps working on those pages.
    when: function () { return Boolean(searchField()); }
  });

  addEntry("Ctrl+Alt+A", "Open the Agentic Actions queue", function () {
    var href = actionsLink();
    if (href) {
      window.location.assign(href);
    }
  }, {
    builtin: true,
    // Reserved even before the Actions page exists, but only claims the key
    // (and only appears in the help) on pages whose nav links to it.
    when: function () { return Boolean(actionsLink()); }
  });

  // Escape is handled directly in onKeydown (it must work while typing);
  // reserving it keeps pages from registering something that never fires.
  reserved.Escape = true;

  // ---------------------------------------------------------------------------
  // Declarative registration from data-shortcut attributes.
  // ---------------------------------------------------------------------------

  // The help text falls back through what a screen reader would announce.
  // A field's value is never used: it is customer data, not a label.
  function labelOf(node) {
    var fieldLabel = node.labels && node.labels.length ? node.labels[0].textContent : "";
    var caption = node.tagName === "INPUT" && /^(submit|button)$/i.test(node.type) ? node.value : "";
    var label = node.getAttribute("data-shortcut-label") ||
      node.getAttribute("aria-label") ||
      fieldLabel || caption ||
      node.getAttribute("title") ||
      node.getAttribute("placeholder") ||
      node.textContent || "";
    return label.replace(/\s+/g, " ").trim();
  }

  // Exposes single-step shortcuts to assistive technology. Sequences are left
  // out: aria-keyshortcuts has no notation for "g then c".
  function ariaKeys(steps) {
    if (steps.length !== 1) {
      return null;
    }
    return displaySteps(steps)[0].map(function (cap) {
      return { Ctrl: "Control", Option: "Alt", Esc: "Escape" }[cap] || cap;
    }).join("+");
  }

  function scanDeclarative() {
    var nodes = document.querySelectorAll("[data-shortcut]");
    Array.prototype.forEach.call(nodes, function (node) {
      var spec = node.getAttribute("data-shortcut");
      try {
        addEntry(spec, labelOf(node), function () { activate(node); }, {
          when: function () { return node.isConnected; }
        });
      } catch (err) {
        // A malformed or reserved attribute must not take the other
        // shortcuts (or the page) down; it is simply not registered.
        return;
      }
      if (!node.hasAttribute("aria-keyshortcuts")) {
        var aria = ariaKeys(parseSpec(spec));
        if (aria) {
          node.setAttribute("aria-keyshortcuts", aria);
        }
      }
    });
    var actions = document.querySelector("[data-shortcut-actions]");
    if (actions && !actions.hasAttribute("aria-keyshortcuts")) {
      actions.setAttribute("aria-keyshortcuts", "Control+Alt+A");
    }
  }

  // ---------------------------------------------------------------------------
  // Public API and start-up.
  // ---------------------------------------------------------------------------

  var ns = window.Clientele || {};
  ns.shortcuts = {
    register: function (keySpec, description, handler) {
      return addEntry(keySpec, description, handler, null);
    },
    // Read-only snapshot, mainly so page scripts and tests can inspect what
    // is active without reaching into this closure.
    list: function () {
      return entries.filter(available).map(function (e) {
        return { keys: e.id, description: e.description };
      });
    }
  };
  window.Clientele = ns;

  // ---------------------------------------------------------------------------
  // Result lists (`data-result-list`): ArrowDown from the search box moves to
  // the first result; ArrowUp and ArrowDown move between results; ArrowUp on
  // the first one goes back to the search box. Enter opens the focused link.
  // ---------------------------------------------------------------------------

  function onResultKeys(event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") {
      return;
    }
    if (event.ctrlKey || event.altKey || event.metaKey || event.shiftKey) {
      return;
    }
    var list = document.querySelector("[data-result-list]");
    if (!list) {
      return;
    }
    var links = Array.prototype.slice.call(list.querySelectorAll("a[href]"));
    if (links.length === 0) {
      return;
    }
    var search = document.querySelector("[data-search]");
    var at = links.indexOf(document.activeElement);
    var target = null;
    if (at === -1) {
      if (event.key === "ArrowDown" && document.activeElement === search) {
        target = links[0];
      }
    } else if (event.key === "ArrowDown") {
      target = links[Math.min(at + 1, links.length - 1)];
    } else {
      target = at === 0 ? search : links[at - 1];
    }
    if (target) {
      event.preventDefault();
      target.focus();
    }
  }

  document.addEventListener("keydown", onResultKeys);
  document.addEventListener("keydown", onKeydown);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", scanDeclarative);
  } else {
    // Loaded late (e.g. without `defer`): the DOM is already complete.
    scanDeclarative();
  }
}());
