"""The page of an invite link: the invitee sets a password once; a dead link gets a page saying why.

The token is never in the URL the server sees (it is the link's fragment): the page's script posts it, and without
script the invitee pastes the link or its code into the page's one field.
"""

from django.contrib.auth.forms import SetPasswordForm
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from . import invites

_DEAD = {
    "unknown": (404, "This invite link is not valid. Check that it was copied whole, or ask for a new one."),
    "used": (410, "This invite link was already used: it works once. Sign in, or ask for a new link."),
    "expired": (410, "This invite link has expired. Ask the person who invited you for a new one."),
}


def _dead(request, reason: str):
    status, message = _DEAD[reason]
    return render(request, "accounts/invite.html", {"title": "Invite link", "dead": message}, status=status)


def _token(request) -> str:
    # The whole link pasted is fine too: its code is what follows the '#'.
    return request.POST.get("token", "").rsplit("#", 1)[-1].strip()


@never_cache
@sensitive_post_parameters("token", "new_password1", "new_password2")
def accept_invite(request):
    if request.method != "POST":
        return render(request, "accounts/invite.html", {"title": "Your invite"})
    token = _token(request)
    try:
        row = invites.find(token)
    except invites.InviteError as error:
        return _dead(request, error.reason)
    # The first post carries the token alone (the link was opened); the next one the password as well.
    form = SetPasswordForm(row.user, request.POST if "new_password1" in request.POST else None)
    if form.is_valid():
        try:
            invites.accept(token, form.cleaned_data["new_password1"])
        except invites.InviteError as error:
            return _dead(request, error.reason)
        return render(request, "accounts/invite.html", {"title": "Password set", "done": True, "invitee": row.user})
    context = {"title": "Set your password", "form": form, "invitee": row.user, "token": token}
    return render(request, "accounts/invite.html", context)
