"""A node's web pages on its HTTPS front door, under the product's path ``/cmplatform``: Cisco Unified
OS Administration (Security > Certificate Management, Certificate Monitor, Certificate Revocation),
Cisco Unified Serviceability (Tools > Control Center - Network Services) and, on the publisher,
Cisco Unified CM Administration (System > Enterprise Parameters).

A thin adapter like the SSH and REST doors: every page reads and every button acts through the
node operations (``RequestFn``, the control path of the ``certsim`` CLI), and every result or error
shown is the platform CLI's text (``platform_cli.Text``) or the node's own message. Nothing here
decides anything about certificates.

Pages are server-rendered (Jinja2, autoescaped: every field of a certificate is untrusted text),
forms work without JavaScript, the static files ship in the package, and the answers carry a
Content-Security-Policy that allows scripts and styles from this server only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import jinja2
import markupsafe
from aiohttp import web

from cluster.doors.auth import Credentials, RequestFn, Throttle
from cluster.doors.descriptions import describe_upload
from cluster.doors.platform_cli import Text, _advice, _details, trust_description
from cluster.doors.sessions import CSRF_FIELD, PageAuth, has_session
from cluster.labfile import LabSpec, NodeSpec
from node import certops
from node.catalog import EC_KEY_SIZES, PARAMS, RSA_KEY_SIZES, UNITS, KeyAlgo, Role, stores_for, units_for
from node.errors import BadInput, CertsimError, Unavailable
from node.safetext import safe_lines

ROOT = "/cmplatform"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
STATIC_FILES = {"certsim.css": "text/css", "live.js": "text/javascript", "forms.js": "text/javascript"}
MULTI_SERVER = "Multi-server(SAN)"
FIND_FIELDS = {  # the find bar's fields (R-OP-LIST) and the list column each one matches
    "Certificate": "certificate",
    "Common Name": "common_name",
    "Expiration": "expiration",
    "Key Type": "key_type",
    "Usage": "usage",
}
FIND_OPS = ("begins with", "contains", "ends with", "is exactly", "is empty", "is not empty")


def _printable(value: Any) -> Any:
    """Every ``{{ value }}`` of a page: text with its control characters escaped (markup left as it is)."""
    return safe_lines(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value


def templates(package: str = "cluster.doors") -> jinja2.Environment:
    """The package's templates, autoescaped (certificate text is untrusted wherever it is shown)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_printable,  # and never a control character raw: what a page echoes is escaped (node.safetext)
    )
    env.globals["csrf_field"] = CSRF_FIELD
    return env


def static_file(name: str) -> tuple[bytes, str]:
    """A file shipped in ``cluster/doors/static`` by its name (only the names listed are served)."""
    if name not in STATIC_FILES:
        raise web.HTTPNotFound
    data = importlib.resources.files("cluster.doors").joinpath("static", name).read_bytes()
    return data, STATIC_FILES[name]


def find_match(op: str, value: str, text: str) -> bool:
    """The find bar's comparison (case-insensitive), as the product's Find does on the shown column."""
    v, t = value.lower(), text.strip().lower()
    return {
        "begins with": lambda: v.startswith(t),
        "contains": lambda: t in v,
        "ends with": lambda: v.endswith(t),
        "is exactly": lambda: v == t,
        "is empty": lambda: not v,
        "is not empty": lambda: bool(v),
    }.get(op, lambda: True)()


def list_rows(
    rows: list[Mapping[str, Any]],
    fqdn: str,
    identities: Mapping[str, Mapping[str, Any]],
    descriptions: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The Certificate List's rows from the node's ``list`` answer, in the product's columns; the
    Description is the one given at upload (``cert_descriptions``), else the product's default."""
    out = []
    for r in rows:
        identity = r["usage"] == "identity"
        store = str(r["store"])
        name = store if identity else str(r["name"])
        if not identity:
            description = trust_description(None)
        elif r["self_signed"]:
            description = Text.LIST_SELF_SIGNED.format(path=f"{store}/{name}.pem").split(": ", 1)[1]
        else:
            description = Text.LIST_SIGNED_BY.format(path="", issuer=r["issuer_cn"] or r["issuer"]).split(": ", 1)[1]
        description = (descriptions or {}).get(f"{store}/{name}") or description
        multi = identity and str(r.get("source")) == "ca-signed" and len(identities.get(store, {}).get("san") or []) > 1
        out.append(
            {
                "store": store,
                "name": name,
                "certificate": store,
                "common_name": str(r["cn"]) if identity else str(r["name"]),
                "usage": "identity" if identity else "trust",
                "type": ("Self-signed" if r["self_signed"] else "CA-signed") if identity else "trust-certs",
                "key_type": str(r["key_type"]),
                "distribution": MULTI_SERVER if multi else fqdn,
                "issued_by": str(r["issuer_cn"] or r["issuer"]),
                "expiration": str(r["not_after"])[:10],
                "description": description,
                "ocsp": r.get("ocsp"),
                "restart_pending": identities.get(store, {}).get("restart_pending") or [],
                "flags": identities.get(store, {}).get("flags") or [],
            }
        )
    return sorted(out, key=lambda x: (x["certificate"].lower(), x["common_name"].lower()))


def _pem(download: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(str(download["data"]), validate=True)
    except (binascii.Error, KeyError):
        raise CertsimError("the node returned a malformed download") from None


def _flag(form: Mapping[str, Any], name: str) -> bool:
    return str(form.get(name, "")).lower() in ("on", "true", "1", "yes")


class OsAdminPages:
    """The pages of one node; ``request`` runs a node operation on it."""

    def __init__(
        self,
        lab: LabSpec,
        node: NodeSpec,
        request: RequestFn,
        auth: PageAuth,
        env: jinja2.Environment,
        remote: Callable[[str], RequestFn] | None = None,
    ) -> None:
        self.lab = lab
        self.node = node
        self._request = request
        self._remote = remote  # another server's operations (Control Center of a remote node)
        self.auth = auth
        self.env = env
        self._facts: tuple[Role, bool] | None = None

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        return await self._request(op, args or {})

    async def facts(self) -> tuple[Role, bool]:
        """The node's role and whether it is the publisher (asked once)."""
        if self._facts is None:
            status = await self.call("status")
            self._facts = Role(str(status["role"])), bool(status["publisher"])
        return self._facts

    # -- rendering ------------------------------------------------------------------------------

    async def render(self, request: web.Request, template: str, http_status: int = 200, **ctx: Any) -> web.Response:
        session = self.auth.session(request) if has_session(request) else None
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        role, publisher = (None, False)
        if session is not None:
            with contextlib.suppress(CertsimError):  # the page still renders when the node is away
                role, publisher = await self.facts()
        body = self.env.get_template(template).render(
            root=ROOT,
            node=self.node,
            lab=self.lab,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            flash=flash,
            publisher=publisher,
            role=role.value if role else "",
            **ctx,
        )
        response = web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        return response

    def flash(self, request: web.Request, level: str, *lines: str) -> None:
        self.auth.session(request).flash.extend((level, line) for line in lines if line)

    def back(self, path: str, **query: str) -> web.HTTPSeeOther:
        return web.HTTPSeeOther(f"{ROOT}/{path}" + (f"?{urlencode(query)}" if query else ""))

    # -- login ----------------------------------------------------------------------------------

    async def login_form(self, request: web.Request, error: str = "") -> web.Response:
        async def page(token: str) -> web.Response:
            return await self.render(
                request,
                "login.html",
                http_status=401 if error else 200,
                error=error,
                login_token=token,
                title="Cisco Unified Operating System Administration",
            )

        return await self.auth.login_page(page)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        signed_in, error = await self.auth.sign_in(request, f"{ROOT}/showHome.do")
        if signed_in is None:
            return await self.login_form(request, error)
        raise signed_in

    async def logout(self, request: web.Request) -> web.StreamResponse:
        raise self.auth.logout(request)

    async def home(self, request: web.Request) -> web.Response:
        status = await self.call("status")
        return await self.render(
            request, "home.html", title="Cisco Unified Operating System Administration", status=status
        )

    # -- Certificate List -----------------------------------------------------------------------

    async def cert_list(self, request: web.Request) -> web.Response:
        q = request.query
        field_name = q.get("field", "Certificate")
        op = q.get("op", "begins with")
        text = q.get("text", "")
        args: dict[str, Any] = {}
        column = FIND_FIELDS.get(field_name, "certificate")
        if op not in FIND_OPS:
            op = "begins with"
        # what R-OP-LIST's node filter can say exactly goes to the node; the product's string match is the page's
        if text.strip() and op == "is exactly":
            if column == "usage" and text.strip().lower() in ("identity", "trust"):
                args["usage"] = text.strip().lower()
            elif column == "key_type" and text.strip().upper() in ("RSA", "EC"):
                args["key_type"] = text.strip().upper()
        error = ""
        rows: list[dict[str, Any]] = []
        try:
            listed, identities = await self.call("list", args), await self.call("identity_list")
            by_unit = {str(i["unit"]): i for i in identities}
            rows = list_rows(listed, self.node.fqdn, by_unit, await self.call("cert_descriptions"))
        except CertsimError as exc:
            error = exc.message
        if text.strip() or op in ("is empty", "is not empty"):
            rows = [r for r in rows if find_match(op, str(r[column]), text)]
        return await self.render(
            request,
            "cert_list.html",
            title="Certificate List",
            rows=rows,
            fields=list(FIND_FIELDS),
            ops=FIND_OPS,
            field=field_name,
            op=op,
            text=text,
            error=error,
        )

    # -- Certificate Details --------------------------------------------------------------------

    def _target(self, q: Mapping[str, str]) -> tuple[str, str]:
        store = str(q.get("store", ""))
        name = str(q.get("name", ""))
        if not store:
            raise BadInput("no certificate chosen")
        return store, name

    async def cert_details(self, request: web.Request) -> web.Response:
        store, name = self._target(request.query)
        identity = store in UNITS
        args = {"store": store, "format": "pem", **({} if identity else {"name": name})}
        try:
            download = await self.call("download", args)
        except CertsimError as exc:
            self.flash(request, "error", exc.message)
            raise self.back("certificateFindList.do") from None
        pem = _pem(download).decode()
        rows = await self.call("list", {"store": store, "usage": "identity" if identity else "trust"})
        row = next((r for r in rows if identity or r["name"] == download["name"]), None)
        ident: dict[str, Any] = {}
        if identity:
            ident = next((i for i in await self.call("identity_list") if i["unit"] == store), {})
        described = await self.call("cert_descriptions")
        listed = list_rows([row], self.node.fqdn, {store: ident} if ident else {}, described)[0] if row else None
        return await self.render(
            request,
            "cert_details.html",
            title="Certificate Details",
            store=store,
            name=download["name"],
            filename=f"{download['name']}.pem",
            identity=identity,
            regenerable=identity,
            listed=listed,
            ident=ident,
            text=_details(pem),
            pem=pem,
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        """R-OP-DOWNLOAD: a certificate by its store and name, through the node's ``download``."""
        store, name = self._target(request.query)
        fmt = request.query.get("format", "pem")
        args = {"store": store, "format": fmt, **({} if store in UNITS else {"name": name})}
        result = await self.call("download", args)
        return _attachment(
            _pem(result), str(result["filename"]), "application/x-pem-file" if fmt == "pem" else "application/pkix-cert"
        )

    async def delete_form(self, request: web.Request) -> web.Response:
        store, name = self._target(request.query)
        return await self.render(
            request,
            "confirm.html",
            title="Delete Certificate",
            action=f"{ROOT}/certificateDelete.do",
            fields={"store": store, "name": name},
            warning=(
                "You are about to permanently delete this certificate. Deleting a certificate can affect your system"
                " operations and can break a certificate chain if the certificate is part of an existing chain."
                " This action cannot be undone. Continue?"
            ),
            subject=f"{store}/{name}.pem",
            ok="OK",
            cancel=f"{ROOT}/certificateEdit.do?{urlencode({'store': store, 'name': name})}",
        )

    async def delete_post(self, request: web.Request) -> web.StreamResponse:
        """R-OP-DELETE-1 (trust only; the node refuses identities) and R-REPL-3 (the node replicates it)."""
        form = await request.post()
        store, name = self._target(form)  # type: ignore[arg-type]
        try:
            result = await self.call("delete", {"store": store, "name": name})
        except CertsimError as exc:
            self.flash(request, "error", exc.message)
            raise self.back("certificateEdit.do", store=store, name=name) from None
        self.flash(request, "ok", Text.DELETED.format(file=f"{result['deleted']}.pem", store=store))
        raise self.back("certificateFindList.do")

    async def regen_form(self, request: web.Request) -> web.Response:
        store, _ = self._target(request.query)
        return await self.render(
            request,
            "confirm.html",
            title="Regenerate Certificate",
            action=f"{ROOT}/certificateRegenerate.do",
            fields={"store": store, "name": store},
            warning=Text.REGEN_WARNING.format(unit=store)
            + ". Regenerating a certificate can affect your system operations; restart the affected services"
            " afterwards.",
            subject=store,
            ok="Regenerate",
            cancel=f"{ROOT}/certificateEdit.do?{urlencode({'store': store, 'name': store})}",
        )

    async def regen_post(self, request: web.Request) -> web.StreamResponse:
        """R-OP-REGEN-1: same key length (Regenerate) or the one chosen (Generate New Self-signed)."""
        form = await request.post()
        unit = str(form.get("store") or form.get("purpose") or "")
        args: dict[str, Any] = {"unit": unit}
        if form.get("key_length"):
            try:
                args["key_size"] = int(str(form["key_length"]))
            except ValueError:
                args["key_size"] = str(form["key_length"])  # the node names the problem
        try:
            result = await self.call("regen", args)
        except CertsimError as exc:
            self.flash(request, "error", exc.message)
            raise self.back("certificateFindList.do") from None
        self.flash(
            request,
            "ok",
            Text.REGENERATED.format(unit=unit),
            Text.RESTART_REMINDER.format(unit=unit),
            *_advice(result),
        )
        raise self.back("certificateEdit.do", store=unit, name=unit)

    # -- dialogs --------------------------------------------------------------------------------

    async def _units(self) -> list[Any]:
        role, publisher = await self.facts()
        held = {str(i["unit"]) for i in await self.call("identity_list")}
        return [u for u in units_for(role, publisher=publisher) if u.name in held]

    async def upload_form(self, request: web.Request) -> web.Response:
        role, _ = await self.facts()
        units = [u.name for u in await self._units() if u.trust_store is not None]
        stores = [s.name for s in stores_for(role)]
        purposes = sorted([*units, *stores], key=str.lower)
        return await self.render(
            request,
            "upload.html",
            title="Upload Certificate/Certificate chain",
            purposes=purposes,
            purpose=request.query.get("purpose", "tomcat-trust"),
            description="",
        )

    async def upload_post(self, request: web.Request) -> web.StreamResponse:
        """R-OP-UPLOAD-1..4: a ``-trust`` purpose is a trust upload, a unit an identity upload."""
        form = await request.post()
        purpose = str(form.get("purpose", ""))
        upload = form.get("file")
        data = upload.file.read() if isinstance(upload, web.FileField) else b""
        lines: list[str] = []
        try:
            description = certops.check_description(str(form.get("description", "")))
            if not data:
                raise BadInput(Text.NOTHING_PASTED.replace("pasted", "uploaded"))
            b64 = base64.b64encode(data).decode()
            if purpose in UNITS:
                result = await self.call("identity_upload", {"unit": purpose, "data": b64})
                if result.get("shared_with"):
                    lines.append(Text.SHARED_WITH.format(nodes=", ".join(result["shared_with"])))
            else:
                result = await self.call("upload", {"store": purpose, "data": b64})
            lines += [str(n) for n in result.get("notes", [])]
            await describe_upload(self._request, purpose, result, description)
        except CertsimError as exc:
            self.flash(request, "error", exc.message)
            raise self.back("certificateUpload.do", purpose=purpose) from None
        self.flash(
            request, "ok", Text.IMPORTED.format(unit=purpose), Text.RESTART_REMINDER.format(unit=purpose), *lines
        )
        raise self.back("certificateFindList.do")

    async def _csr_context(self, request: web.Request, *, self_signed: bool) -> dict[str, Any]:
        _, publisher = await self.facts()
        units = await self._units()
        if not self_signed:
            units = [u for u in units if u.trust_store is not None]
        names = [u.name for u in units]
        purpose = request.query.get("purpose", "tomcat" if "tomcat" in names else (names[0] if names else ""))
        if purpose not in names and names:
            purpose = names[0]
        unit = UNITS.get(purpose)
        multi = bool(unit and unit.multi_server and publisher)
        sizes = EC_KEY_SIZES if unit and unit.key_algo is KeyAlgo.EC else RSA_KEY_SIZES
        san = (
            sorted(n.fqdn for n in self.lab.nodes if n.role.value == self.node.role.value)
            if request.query.get("distribution") == MULTI_SERVER and multi
            else [self.node.fqdn]
        )
        return {
            "purposes": names,
            "purpose": purpose,
            "distributions": [self.node.fqdn, *([MULTI_SERVER] if multi else [])],
            "distribution": request.query.get("distribution", self.node.fqdn),
            "common_name": certops.csr_cn(
                unit, self.node.fqdn, multi_server=request.query.get("distribution") == MULTI_SERVER
            )
            if unit
            else "",
            "san": san,
            "key_type": unit.key_algo.value if unit else "",
            "key_lengths": sizes,
            "hashes": ["SHA256"],
        }

    async def csr_form(self, request: web.Request) -> web.Response:
        ctx = await self._csr_context(request, self_signed=False)
        return await self.render(request, "csr.html", title="Generate Certificate Signing Request", **ctx)

    async def csr_post(self, request: web.Request) -> web.StreamResponse:
        """R-OP-CSR-1: through the node's ``csr_gen`` (multi-server where the unit allows it)."""
        form = await request.post()
        unit = str(form.get("purpose", ""))
        args: dict[str, Any] = {"unit": unit, "multi_server": str(form.get("distribution")) == MULTI_SERVER}
        if form.get("key_length"):
            try:
                args["key_size"] = int(str(form["key_length"]))
            except ValueError:
                args["key_size"] = str(form["key_length"])
        try:
            result = await self.call("csr_gen", args)
        except CertsimError as exc:
            self.flash(request, "error", exc.message)
            raise self.back("certificateGenerateCsr.do", purpose=unit) from None
        shared = [f"SAN: {', '.join(result.get('san') or [])}"] if result.get("multi_server") else []
        self.flash(request, "ok", Text.CSR_GENERATED.format(unit=unit), *shared)
        raise self.back("certificateFindList.do")

    async def selfsigned_form(self, request: web.Request) -> web.Response:
        ctx = await self._csr_context(request, self_signed=True)
        return await self.render(request, "selfsigned.html", title="Generate New Self-signed Certificate", **ctx)

    async def download_csr(self, request: web.Request) -> web.StreamResponse:
        """R-OP-DOWNLOAD: the pending CSR of a unit, by name, through ``csr_get``."""
        purpose = request.query.get("purpose", "")
        if purpose and request.query.get("download"):
            try:
                result = await self.call("csr_get", {"unit": purpose})
            except CertsimError as exc:
                self.flash(request, "error", exc.message)
                raise self.back("certificateDownloadCsr.do") from None
            return _attachment(str(result["csr"]).encode(), str(result["filename"]), "application/pkcs10")
        pending = [str(r["unit"]) for r in await self.call("csr_list")]
        return await self.render(
            request,
            "download_csr.html",
            title="Download Certificate Signing Request",
            purposes=pending,
            purpose=purpose,
        )

    # -- monitor, revocation --------------------------------------------------------------------

    async def monitor(self, request: web.Request) -> web.StreamResponse:
        """R-MON-1 through the node's ``monitor_get`` / ``monitor_set``."""
        if request.method == "POST":
            form = await request.post()
            unit = "h" if form.get("frequency_unit") == "hours" else "d"
            args: dict[str, Any] = {
                "frequency": f"{str(form.get('frequency', '')).strip()}{unit}",
                "email_enabled": _flag(form, "email_enabled"),
                "lsc_monitoring": _flag(form, "lsc_monitoring"),
                "emails": str(form.get("emails", "")),
            }
            try:
                args["notification_start_days"] = int(str(form.get("start_days", "")).strip())
            except ValueError:
                args["notification_start_days"] = str(form.get("start_days", ""))  # the node names the problem
            try:
                await self.call("monitor_set", args)
            except CertsimError as exc:
                self.flash(request, "error", exc.message)
            else:
                self.flash(request, "ok", "Update successful")
            raise self.back("certificateMonitor.do")
        state = await self.call("monitor_get")
        settings = state["settings"]
        minutes = int(str(settings["frequency"]).rstrip("m"))
        freq, unit = (minutes // 1440, "days") if minutes % 1440 == 0 else (minutes // 60, "hours")
        return await self.render(
            request, "monitor.html", title="Certificate Monitor", state=state, s=settings, freq=freq, freq_unit=unit
        )

    async def revocation(self, request: web.Request) -> web.StreamResponse:
        """R-OCSP-1 through the node's ``ocsp_get`` / ``ocsp_set``."""
        if request.method == "POST":
            form = await request.post()
            args: dict[str, Any] = {"enabled": _flag(form, "enabled")}
            if form.get("responder") == "configured":
                args["url"] = str(form.get("url", "")).strip() or None
                if args["url"] is None:
                    args.pop("url")
                    self.flash(
                        request, "error", "Enter the OCSP Configured URI, or choose Use OCSP URI from Certificate"
                    )
                    raise self.back("certificateRevocation.do")
            else:
                args["url"] = "certificate"
            if _flag(form, "check_enabled"):
                unit = "h" if form.get("interval_unit") == "hours" else "d"
                args["interval"] = f"{str(form.get('interval', '')).strip()}{unit}"
            try:
                result = await self.call("ocsp_set", args)
            except CertsimError as exc:
                self.flash(request, "error", exc.message)
            else:
                checked = result.get("checked")
                self.flash(request, "ok", "Update successful", f"{checked} certificate(s) checked" if checked else "")
            raise self.back("certificateRevocation.do")
        state = await self.call("ocsp_get")
        s = state["settings"]
        seconds = int(s["interval_s"])
        interval, unit = (seconds // 86400, "days") if seconds % 86400 == 0 else (max(1, seconds // 3600), "hours")
        return await self.render(
            request,
            "revocation.html",
            title="Certificate Revocation",
            state=state,
            s=s,
            interval=interval,
            interval_unit=unit,
        )

    # -- Serviceability, CM Administration --------------------------------------------------------

    async def control_center(self, request: web.Request) -> web.StreamResponse:
        """Tools > Control Center - Network Services: choose a server and Go, select a service, Restart.

        A restart is the node's ``service_restart`` (R-OP-UPLOAD-4: Cisco Tomcat's restart switches the
        certificate its HTTPS door serves). Another server of the cluster is reached the product's way,
        Tomcat to Tomcat: this node's ``check_remote`` must trust the certificate the remote Tomcat serves
        (R-LINK-1), else the page shows the product's error (R-TS-1)."""
        params = await request.post() if request.method == "POST" else request.query
        server = str(params.get("server") or self.node.name)
        peers = [str(p["name"]) for p in await self.call("cluster_nodes")] or [self.node.name]
        if server not in peers:
            server = self.node.name
        call: RequestFn = self._request
        if server != self.node.name:
            check = await self.call("check_remote", {"peer": server})
            if not check.get("connected"):
                return await self.render(
                    request,
                    "control_center.html",
                    title="Control Center - Network Services",
                    services=[],
                    servers=peers,
                    server=server,
                    remote_error=[str(check["message"]), str(check.get("reason", ""))],
                )
            if self._remote is None:
                raise Unavailable("this door cannot reach other servers")
            call = self._remote(server)
        if request.method == "POST":
            name = str(params.get("service", ""))
            if not name:
                self.flash(request, "error", "Select a service first")
                raise self.back("serviceability/controlCenter.do", server=server)
            try:
                await call("service_restart", {"name": name})
            except CertsimError as exc:
                self.flash(request, "error", exc.message)
            else:
                self.flash(request, "ok", Text.SERVICE_STATE.format(name=name, state=Text.STARTED))
            raise self.back("serviceability/controlCenter.do", server=server)
        services = await call("service_list", {})
        return await self.render(
            request,
            "control_center.html",
            title="Control Center - Network Services",
            services=services,
            servers=peers,
            server=server,
            remote_error=[],
        )

    async def enterprise_params(self, request: web.Request) -> web.StreamResponse:
        """System > Enterprise Parameters (publisher): the parameters the certificate operations read."""
        _, publisher = await self.facts()
        if not publisher:
            self.flash(request, "error", "Cisco Unified CM Administration runs on the publisher")
            raise self.back("showHome.do")
        if request.method == "POST":
            form = await request.post()
            current = await self.call("param_get")
            lines: list[str] = []
            try:
                for name in PARAMS:
                    value = str(form.get(name, ""))
                    if value and value != current.get(name):
                        result = await self.call("param_set", {"name": name, "value": value})
                        lines += [f"Restart {r}" for r in result.get("restart", [])]
            except CertsimError as exc:
                self.flash(request, "error", exc.message)
            else:
                self.flash(request, "ok", "Update successful", *lines)
            raise self.back("ccmadmin/enterpriseParameters.do")
        values = await self.call("param_get")
        return await self.render(
            request,
            "enterprise_params.html",
            title="Enterprise Parameters Configuration",
            params=[(p, values.get(p.name, p.default)) for p in PARAMS.values()],
        )

    async def static(self, request: web.Request) -> web.Response:
        data, content_type = static_file(request.match_info["name"])
        return web.Response(body=data, content_type=content_type, headers={"Cache-Control": "max-age=3600"})


def _attachment(data: bytes, filename: str, content_type: str) -> web.Response:
    safe = "".join(c for c in filename if c.isalnum() or c in "._-") or "download"
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}"', **SECURITY_HEADERS},
    )


PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page_errors(pages: OsAdminPages) -> Any:
    """A node error on a page read is shown on the page in the product's style, never a traceback."""

    @web.middleware
    async def errors(request: web.Request, handler: PageHandler) -> web.StreamResponse:
        if not request.path.startswith(ROOT):
            return await handler(request)
        try:
            return await handler(request)
        except CertsimError as exc:
            return await pages.render(
                request,
                "error.html",
                http_status=400 if exc.code != "unavailable" else 503,
                error=exc.message,
                title="Error",
            )

    return errors


def add_pages(
    app: web.Application,
    *,
    lab: LabSpec,
    node: NodeSpec,
    request: RequestFn,
    credentials: Credentials,
    throttle: Throttle,
    log: Any,
    remote: Callable[[str], RequestFn] | None = None,
) -> OsAdminPages:
    """Add the node's pages to its HTTPS application (the REST API's, whose size limit they share)."""
    auth = PageAuth(ROOT, credentials, throttle, log)
    pages = OsAdminPages(lab, node, request, auth, templates(), remote)
    app.middlewares.append(auth.middleware())
    app.middlewares.append(_page_errors(pages))
    r = app.router
    r.add_get(ROOT, _home_redirect)
    r.add_get(ROOT + "/", _home_redirect)
    r.add_get(ROOT + "/navigate", _navigate)
    r.add_get(auth.login_path, pages.login_form)
    r.add_post(auth.login_path, pages.login_post)
    r.add_post(auth.logout_path, pages.logout)
    r.add_get(ROOT + "/static/{name}", pages.static)
    r.add_get(ROOT + "/showHome.do", pages.home)
    r.add_get(ROOT + "/certificateFindList.do", pages.cert_list)
    r.add_get(ROOT + "/certificateEdit.do", pages.cert_details)
    r.add_get(ROOT + "/certificateDownload.do", pages.download)
    r.add_get(ROOT + "/certificateDelete.do", pages.delete_form)
    r.add_post(ROOT + "/certificateDelete.do", pages.delete_post)
    r.add_get(ROOT + "/certificateRegenerate.do", pages.regen_form)
    r.add_post(ROOT + "/certificateRegenerate.do", pages.regen_post)
    r.add_get(ROOT + "/certificateUpload.do", pages.upload_form)
    r.add_post(ROOT + "/certificateUpload.do", pages.upload_post)
    r.add_get(ROOT + "/certificateGenerateCsr.do", pages.csr_form)
    r.add_post(ROOT + "/certificateGenerateCsr.do", pages.csr_post)
    r.add_get(ROOT + "/certificateGenerateNewSelfSigned.do", pages.selfsigned_form)
    r.add_post(ROOT + "/certificateGenerateNewSelfSigned.do", pages.regen_post)
    r.add_get(ROOT + "/certificateDownloadCsr.do", pages.download_csr)
    for path, handler in (
        ("/certificateMonitor.do", pages.monitor),
        ("/certificateRevocation.do", pages.revocation),
        ("/serviceability/controlCenter.do", pages.control_center),
        ("/ccmadmin/enterpriseParameters.do", pages.enterprise_params),
    ):
        r.add_get(ROOT + path, handler)
        r.add_post(ROOT + path, handler)
    return pages


async def _home_redirect(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{ROOT}/showHome.do")


NAVIGATION = {
    "os": "/showHome.do",
    "serviceability": "/serviceability/controlCenter.do",
    "ccmadmin": "/ccmadmin/enterpriseParameters.do",
}


async def _navigate(request: web.Request) -> web.StreamResponse:
    """The Navigation list's Go: switch between the product's applications."""
    raise web.HTTPSeeOther(ROOT + NAVIGATION.get(request.query.get("to", ""), "/showHome.do"))


def now_text(sim: str) -> str:
    """A simulated ISO time as the pages show it."""
    try:
        return dt.datetime.fromisoformat(sim.replace("Z", "+00:00")).strftime("%a %b %d %H:%M:%S UTC %Y")
    except ValueError:
        return sim
