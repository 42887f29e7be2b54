"""Two-factor sign-in for the admin (django-otp): a TOTP authenticator enrolled by QR code, one-time recovery codes,
required of everyone when POOLER_REQUIRE_2FA is on and of anyone who enrolled in any case. Failed sign-ins (a wrong
password or code) are counted by django-axes per user and address, and audited."""

import io

import qrcode
import qrcode.image.svg
from axes.signals import user_locked_out
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import AuditLog
from .networks import request_address

RECOVERY_CODES = 10


def needs_second_factor(request) -> bool:
    """Whether the signed-in user must still give a code (or enrol) before the admin lets them in."""
    user = request.user
    if not user.is_authenticated or user.is_verified():
        return False
    return settings.POOLER_REQUIRE_2FA or user_has_device(user)


class SignInForm(AdminAuthenticationForm):
    """Password, then the authenticator's code (or a recovery code) for a user who has one."""

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="The six digits your authenticator app shows, or one of your recovery codes.",
    )

    def clean(self):
        cleaned = super().clean()
        user = self.get_user()
        if user is None or not user_has_device(user):
            return cleaned
        token = (cleaned.get("otp_token") or "").replace(" ", "")
        device = match_token(user, token) if token else None
        if device is None:
            # Counted like a wrong password: django-axes throttles the user at this address.
            user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=self.request)
            raise forms.ValidationError(
                "Enter the current code of your authenticator app, or a recovery code."
                if not token
                else "That code is wrong or was already used.",
                code="invalid_otp",
            )
        user.otp_device = device  # django-otp marks the session verified when it signs in
        return cleaned


class PoolerAdminSite(admin.AdminSite):
    login_form = SignInForm
    login_template = "admin/pooler_login.html"

    def has_permission(self, request):
        return super().has_permission(request) and not needs_second_factor(request)

    def login(self, request, extra_context=None):
        # Signed in with a password but without an authenticator where one is required: enrol first.
        if request.method == "GET" and request.user.is_authenticated and request.user.is_staff:
            if needs_second_factor(request) and not user_has_device(request.user):
                return redirect("pooler-2fa")
        return super().login(request, extra_context)


def _qr_svg(url: str) -> str:
    image = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    out = io.BytesIO()
    image.save(out)
    svg = out.getvalue().decode()
    return svg[svg.index("<svg") :]  # inline in the page: no XML declaration


def _audit(request, action: str) -> None:
    user = request.user
    AuditLog.objects.create(
        actor=f"admin:{user.get_username()}",
        action=action,
        object_type="user",
        object_id=str(user.pk),
        object_repr=user.get_username(),
    )


def _new_recovery_codes(user) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="recovery codes")
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


class _CodeForm(forms.Form):
    code = forms.CharField(label="Code from the app", max_length=12, widget=forms.TextInput(attrs={"autofocus": True}))


@never_cache
@login_required(login_url="admin:login")
def enrol(request):
    """/admin/2fa/: enrol an authenticator (QR code, then a code from it), or make new recovery codes."""
    user = request.user
    context = {**admin.site.each_context(request), "title": "Two-factor sign-in"}
    if not user.is_staff:
        return redirect("admin:login")
    if user_has_device(user):
        # Only a session that gave a code may change the second factor.
        if not user.is_verified():
            return redirect("admin:login")
        if request.method == "POST" and request.POST.get("recovery"):
            with transaction.atomic():
                codes = _new_recovery_codes(user)
                _audit(request, "new_recovery_codes")
            return render(request, "admin/pooler_2fa.html", {**context, "codes": codes})
        left = StaticToken.objects.filter(device__user=user).count()
        return render(request, "admin/pooler_2fa.html", {**context, "enrolled": True, "codes_left": left})
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first() or TOTPDevice.objects.create(
        user=user, name="authenticator", confirmed=False
    )
    form = _CodeForm(request.POST or None)
    if form.is_valid():
        if device.verify_token(form.cleaned_data["code"].replace(" ", "")):
            with transaction.atomic():
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                codes = _new_recovery_codes(user)
                _audit(request, "enrol_2fa")
            otp_login(request, device)
            return render(request, "admin/pooler_2fa.html", {**context, "codes": codes})
        form.add_error("code", "That code does not match: check the phone's clock, and type the newest code.")
    return render(
        request,
        "admin/pooler_2fa.html",
        {
            **context,
            "form": form,
            "qr": mark_safe(_qr_svg(device.config_url)),  # an SVG made here, from the device's own URL
            "secret": device.config_url.split("secret=")[1].split("&")[0],
        },
    )


@receiver(user_login_failed)
def _audit_failed_sign_in(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    AuditLog.objects.create(
        actor=f"signin:{request_address(request) if request is not None else '?'}",
        action="signin_failed",
        object_type="user",
        object_repr=username,
    )


@receiver(user_locked_out)
def _audit_lockout(sender, request, username, ip_address, **kwargs):
    AuditLog.objects.create(
        actor=f"signin:{ip_address}",
        action="signin_locked_out",
        object_type="user",
        object_repr=str(username or "")[:200],
        changes={"cool_off_minutes": settings.AXES_COOLOFF_TIME.total_seconds() / 60},
    )
