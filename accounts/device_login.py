"""The admin's device-code login: start a sign-in for a pool, show the code, and poll (from the page) until the
account is stored. The sign-in waits in the operator's session, encrypted: its device_auth_id can fetch tokens."""

import json
import secrets
import time
from dataclasses import asdict
from functools import partial

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from . import crypto
from .admin import actor_of
from .importing import ImportError_, store_account
from .models import Pool, UpstreamAccount
from .oauth import (
    DEVICE_CODE_LIFETIME,
    DeviceCode,
    LoginDenied,
    LoginExpired,
    LoginFailed,
    poll_device_code,
    request_device_code,
)
from .operators import Scope

_SESSION_KEY = "device_logins"
_TEMPLATE = "admin/accounts/device_login.html"


class StartForm(forms.Form):
    pool = forms.ModelChoiceField(Pool.objects.all(), help_text="The account joins this pool.")
    label = forms.CharField(
        required=False,
        max_length=UpstreamAccount._meta.get_field("label").max_length,
        help_text="Optional; the account's email when empty.",
    )


def device_login_urls(model_admin) -> list:
    """The page's URLs under the account admin, staff only (admin_view), named `admin:accounts_device_login*`."""

    def view(function):
        return model_admin.admin_site.admin_view(partial(function, model_admin))

    return [
        path("device-login/", view(start), name="accounts_device_login"),
        path("device-login/<slug:login_id>/", view(waiting), name="accounts_device_login_wait"),
        # A poll may store an account: POST, so the admin's CSRF check covers it.
        path("device-login/<slug:login_id>/poll/", require_POST(view(poll)), name="accounts_device_login_poll"),
    ]


def _context(model_admin, request, **extra) -> dict:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Log in an account with a device code",
        **extra,
    }


def _check(model_admin, request) -> None:
    if not model_admin.has_add_permission(request):
        raise PermissionDenied


def start(model_admin, request):
    _check(model_admin, request)
    form = StartForm(request.POST or None)
    form.fields["pool"].queryset = Scope.of(request.user).pools()  # a pool operator's own pools only
    if request.method == "POST" and form.is_valid():
        try:
            code = request_device_code()
        except LoginFailed as exc:
            form.add_error(None, str(exc))
        else:
            login_id = secrets.token_urlsafe(12)
            _save(
                request,
                login_id,
                {
                    "code": asdict(code),
                    "verification_url": code.verification_url,
                    "pool": form.cleaned_data["pool"].pk,
                    "label": form.cleaned_data["label"],
                    "expires_at": time.time() + DEVICE_CODE_LIFETIME,
                    "result": None,
                },
            )
            return redirect("admin:accounts_device_login_wait", login_id=login_id)
    return TemplateResponse(request, _TEMPLATE, _context(model_admin, request, form=form))


def waiting(model_admin, request, login_id: str):
    _check(model_admin, request)
    login = _load(request, login_id)
    if login is None:
        raise Http404("no such device login in this session; start a new one")
    return TemplateResponse(
        request,
        _TEMPLATE,
        _context(
            model_admin,
            request,
            pool=Pool.objects.filter(pk=login["pool"]).first() or "(deleted)",
            label=login["label"],
            user_code=login["code"]["user_code"],
            verification_url=login["verification_url"],
            interval=login["code"]["interval"],
            minutes=DEVICE_CODE_LIFETIME // 60,
            poll_url=reverse("admin:accounts_device_login_poll", kwargs={"login_id": login_id}),
        ),
    )


def poll(model_admin, request, login_id: str):
    """One poll of the auth server, answered as `{"status": pending|approved|denied|expired|failed, "message",
    "interval", "account_url"}`; an outcome is kept, so polling again repeats it."""
    _check(model_admin, request)
    login = _load(request, login_id)
    if login is None:
        return JsonResponse({"status": "failed", "message": "This login is not in your session; start a new one."})
    if login["result"] is None:
        login["result"] = _poll_once(request, login)
        _save(request, login_id, login)
    return JsonResponse(login["result"] or {"status": "pending", "interval": login["code"]["interval"]})


def _poll_once(request, login: dict) -> dict | None:
    """The outcome of one poll, or None while the user has not approved (a slow_down widens the interval)."""
    code = DeviceCode(**login["code"])
    try:
        if time.time() > login["expires_at"]:
            raise LoginExpired(f"the code {code.user_code} expired before it was approved; start the login again")
        answer = poll_device_code(code)
        if answer.tokens is None:
            login["code"]["interval"] = code.interval
            return None
        pool = Pool.objects.get(pk=login["pool"])
        account = store_account(answer.tokens, pool, label=login["label"], actor=actor_of(request))
    except LoginDenied as exc:
        return {"status": "denied", "message": f"Denied: {exc}."}
    except LoginExpired as exc:
        return {"status": "expired", "message": f"Expired: {exc}."}
    except (LoginFailed, ImportError_) as exc:
        return {"status": "failed", "message": f"Failed: {exc}."}
    except Pool.DoesNotExist:
        return {"status": "failed", "message": "Failed: the pool was deleted meanwhile; nothing was stored."}
    return {
        "status": "approved",
        "message": f"Logged in {account.label} ({account.email or 'no email'}) into pool {pool.name}.",
        "account_url": reverse("admin:accounts_upstreamaccount_change", args=[account.pk]),
    }


def _load(request, login_id: str) -> dict | None:
    entry = request.session.get(_SESSION_KEY, {}).get(login_id)
    try:
        return json.loads(crypto.decrypt(entry["sealed"])) if entry else None
    except ValueError:  # sealed with a key since rotated away
        return None


def _save(request, login_id: str, login: dict) -> None:
    # Forget sign-ins whose code died long ago; a finished one's page still shows its outcome for a while.
    horizon = time.time() - DEVICE_CODE_LIFETIME
    logins = {k: v for k, v in request.session.get(_SESSION_KEY, {}).items() if v["expires_at"] > horizon}
    logins[login_id] = {"expires_at": login["expires_at"], "sealed": crypto.encrypt(json.dumps(login))}
    request.session[_SESSION_KEY] = logins
